package baton

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

// writePIDFile replaces path atomically, so a reader never sees an empty
// or half-written PID file.
func writePIDFile(path string) error {
	return writeFileAtomic(path, 0o644, func(w io.Writer) error {
		_, err := io.WriteString(w, strconv.Itoa(os.Getpid())+"\n")
		return err
	})
}

// writeFileAtomic writes a temporary file beside path, syncs it and renames
// it over path: after a crash at any moment path holds the old or the new
// content, never a part.
func writeFileAtomic(path string, mode os.FileMode, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new-*")
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
	return os.Rename(tmp.Name(), path)
}

// removePIDFile removes path if it still names this process.
func removePIDFile(path string) {
	b, err := os.ReadFile(path)
	if err == nil && string(bytes.TrimSpace(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(path)
	}
}
