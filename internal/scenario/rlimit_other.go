//go:build !unix

package scenario

import "math"

// RaiseOpenFiles: no per-process descriptor limit to raise here (Windows
// handles are bounded by memory); it reports no limit.
func RaiseOpenFiles() (uint64, error) { return math.MaxUint64, nil }
