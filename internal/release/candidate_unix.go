//go:build unix

package release

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openCandidate opens the candidate once: without following a link at its
// last component (O_NOFOLLOW) and without waiting for a writer if it is a
// FIFO (O_NONBLOCK, cleared once it is known to be a regular file). Every
// check and the copy then read this descriptor: a name in a directory that
// others may write to can be swapped between two opens (for a link to
// /dev/zero, copied until the disk is full; for a FIFO, blocking forever),
// an open file cannot.
func openCandidate(path string) (*os.File, os.FileInfo, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	for errors.Is(err, unix.EINTR) {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		if fi, lerr := os.Lstat(path); lerr == nil && !fi.Mode().IsRegular() {
			return nil, nil, notRegular(path, fi)
		}
		return nil, nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode().IsRegular() {
			return nil, nil, fmt.Errorf("%w: %s is not a regular file (it was replaced while it was opened)", ErrNotExecutable, path)
		}
		return nil, nil, notRegular(path, fi)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, nil, &os.PathError{Op: "fcntl", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}
