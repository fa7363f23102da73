package events

import (
	"os"

	"golang.org/x/sys/windows"
)

// Every handle on an events file (writers and readers) shares delete
// access: the rotation renames the file while other processes have it
// open, which Windows refuses otherwise (os.OpenFile does not ask for
// FILE_SHARE_DELETE).
const shareAll = windows.FILE_SHARE_READ | windows.FILE_SHARE_WRITE | windows.FILE_SHARE_DELETE

// openAppend opens the events file for appending (created when missing):
// the same access as os.OpenFile's O_APPEND, plus reading its attributes
// (Stat), with delete sharing.
func openAppend(path string) (*os.File, error) {
	const access = windows.FILE_APPEND_DATA | windows.FILE_WRITE_ATTRIBUTES | windows.FILE_WRITE_EA |
		windows.STANDARD_RIGHTS_WRITE | windows.SYNCHRONIZE | windows.FILE_READ_ATTRIBUTES
	return openShared(path, access, windows.OPEN_ALWAYS)
}

// openRead opens the events file for reading, with delete sharing.
func openRead(path string) (*os.File, error) {
	return openShared(path, windows.GENERIC_READ, windows.OPEN_EXISTING)
}

func openShared(path string, access, disposition uint32) (*os.File, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	h, err := windows.CreateFile(p, access, shareAll, nil, disposition, windows.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(h), path), nil
}

// lockFile locks the whole file (LockFileEx), released when f is closed.
func lockFile(f *os.File) error {
	var ol windows.Overlapped
	return windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK, 0, ^uint32(0), ^uint32(0), &ol)
}
