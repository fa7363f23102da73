//go:build !linux

package baton

import "os"

// ownImage is the file this process was started from. Outside Linux there
// is no handle on the running image by path: on Windows the file cannot be
// replaced while it runs (only renamed, and the path followed is the one
// it was started as); elsewhere, a file replaced in place at that path is
// what runs (docs/notes.md).
func ownImage() (string, error) { return os.Executable() }
