//go:build !linux

package metrics

// image is the file process pid runs: here, the path it was started from
// (a release installed since, not upgraded to yet, would be read instead).
func image(_ int, binary string) string { return binary }
