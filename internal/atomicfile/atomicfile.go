// Package atomicfile replaces files so that a crash or a power cut at any
// moment leaves the old or the new content, never a part of one: the new
// content goes to a temporary file beside the target, is synced, renamed
// over the target, and the directory is synced. On Windows a target that
// cannot be replaced because it is a running .exe is renamed aside first
// (TARGET.old-PID), as the baton library does for its own binary.
package atomicfile

import (
	"io"
	"os"
	"path/filepath"
)

// AsideSuffix marks a file renamed aside by the process whose pid follows
// it (Windows).
const AsideSuffix = ".old-"

// Write writes path through a temporary file beside it, with mode.
func Write(path string, mode os.FileMode, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".new-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = write(tmp)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	cleanup, err := Replace(tmp.Name(), path)
	if err != nil {
		return err
	}
	defer cleanup()
	return SyncDir(dir)
}

// Copy replaces dst with a copy of src, with mode.
func Copy(dst, src string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return Write(dst, mode, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}
