package release

import (
	"fmt"
	"os"
)

// openCandidate opens the candidate once, refusing a link (symbolic link
// or junction) or anything but a regular file. Windows follows a link when
// it opens a path, so the name is looked at first, opened, and the open
// file must be the one looked at. Every check and the copy then read this
// handle, never the name again.
func openCandidate(path string) (*os.File, os.FileInfo, error) {
	li, err := os.Lstat(path)
	if err != nil {
		return nil, nil, err
	}
	if !li.Mode().IsRegular() {
		return nil, nil, notRegular(path, li)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() || !os.SameFile(li, fi) {
		f.Close()
		return nil, nil, fmt.Errorf("%w: %s was replaced while it was opened", ErrNotExecutable, path)
	}
	return f, fi, nil
}
