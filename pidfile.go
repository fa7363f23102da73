package baton

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
)

// writePIDFile replaces path atomically (temporary file, fsync, rename), so
// a reader never sees an empty or half-written PID file.
func writePIDFile(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(strconv.Itoa(os.Getpid()) + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
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
