package handlecount

import "os"

// Count returns the number of open file descriptors.
func Count() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	return len(ents) - 1, nil // minus the directory being read
}
