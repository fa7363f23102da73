//go:build !linux && !windows

package release

import "fmt"

const holdersKnowWriters = false

// Holders is implemented on Linux (/proc) and Windows (Restart Manager).
func Holders(path string) ([]Holder, error) {
	return nil, fmt.Errorf("listing the processes that hold a file: %w", ErrUnsupported)
}
