//go:build unix

package atomicfile

import (
	"errors"
	"os"
	"syscall"
)

// SyncDir makes a rename or a new entry in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err // some file systems cannot sync a directory (EINVAL): nothing to do there
	}
	return nil
}

// Replace renames tmp over dst: atomic, and a running binary's text is
// never written to. cleanup has nothing to do on Unix.
func Replace(tmp, dst string) (cleanup func(), err error) {
	return func() {}, os.Rename(tmp, dst)
}

// RemoveStaleAside does nothing on Unix (nothing is renamed aside).
func RemoveStaleAside(string) {}

// Recover has nothing to repair on Unix: a rename replaces dst in one step.
func Recover(string) bool { return false }

// KeepAside keeps dst's current content at aside without ever leaving dst
// missing: a hard link (copied where links are not supported). hadOld is
// false when there is no dst.
func KeepAside(dst, aside string) (hadOld bool, err error) {
	os.Remove(aside)
	err = os.Link(dst, aside)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	if fi, serr := os.Stat(dst); serr == nil {
		return true, Copy(aside, dst, fi.Mode().Perm())
	}
	return false, err
}
