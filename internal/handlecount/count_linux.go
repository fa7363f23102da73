package handlecount

import (
	"os"
	"strconv"
)

// Count returns the number of open file descriptors.
func Count() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	return len(ents) - 1, nil // minus the directory being read
}

// Of returns the number of open file descriptors of process pid (ours or
// a child's: /proc tells for processes of the same user).
func Of(pid int) (int, error) {
	if pid == os.Getpid() {
		return Count() // not counting the directory being read
	}
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}
