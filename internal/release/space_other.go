//go:build !linux && !darwin && !freebsd && !openbsd && !netbsd && !dragonfly && !windows

package release

import "fmt"

func freeSpace(dir string) (uint64, error) {
	return 0, fmt.Errorf("free space: %w", ErrUnsupported)
}
