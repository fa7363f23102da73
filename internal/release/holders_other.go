//go:build !linux && !windows

package release

import (
	"fmt"
	"os"
)

const holdersKnowWriters = false

// Holders is implemented on Linux (/proc) and Windows (Restart Manager).
func Holders(path string) ([]Holder, error) {
	return nil, fmt.Errorf("listing the processes that hold a file: %w", ErrUnsupported)
}

// heldPath: Holders is not implemented here; the name will do.
func heldPath(_ *os.File, path string) string { return path }
