package events

import (
	"os"

	"golang.org/x/sys/windows"
)

// fileID identifies an open file under any of its names, read from the
// handle: os.SameFile reads a FileInfo's id lazily, by path, which after
// a rotation names another file (under Wine one rotation was seen twice
// that way). Only the file index is kept: the events file and its
// rotated copy share a directory, hence a volume, and Wine sometimes
// reports volume serial 0 for a file being renamed (seen: the same file
// with serial 0 on one tick, its real serial on the others).
type fileID struct{ idxHi, idx uint32 }

func idOf(f *os.File) (fileID, error) {
	var d windows.ByHandleFileInformation
	if err := windows.GetFileInformationByHandle(windows.Handle(f.Fd()), &d); err != nil {
		return fileID{}, &os.PathError{Op: "GetFileInformationByHandle", Path: f.Name(), Err: err}
	}
	return fileID{d.FileIndexHigh, d.FileIndexLow}, nil
}
