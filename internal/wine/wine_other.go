//go:build !windows

package wine

// Version reports false: Wine runs Windows programs only.
func Version() (string, bool) { return "", false }
