//go:build unix

package events

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// openAppend opens the events file for appending, never through a
// symlink (the runtime directory is ours, the file must be too).
func openAppend(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
}

// openRead opens the events file for reading.
func openRead(path string) (*os.File, error) { return os.Open(path) }

// lockFile takes an exclusive advisory lock, released when f is closed.
func lockFile(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			return err
		}
	}
}
