//go:build unix

package events

import (
	"errors"
	"os"
	"syscall"
)

// fileID identifies an open file under any of its names.
type fileID struct{ dev, ino uint64 }

func idOf(f *os.File) (fileID, error) {
	fi, err := f.Stat()
	if err != nil {
		return fileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, errors.New("no device and inode for " + f.Name())
	}
	return fileID{uint64(st.Dev), uint64(st.Ino)}, nil
}
