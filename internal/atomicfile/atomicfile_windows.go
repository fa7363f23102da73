package atomicfile

import (
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/windows"
)

// SyncDir does nothing on Windows: NTFS journals renames done with
// MOVEFILE_WRITE_THROUGH, and there is no directory handle to flush.
func SyncDir(string) error { return nil }

func rename(from, to string) error {
	f, err := windows.UTF16PtrFromString(from)
	if err != nil {
		return err
	}
	t, err := windows.UTF16PtrFromString(to)
	if err != nil {
		return err
	}
	if err := windows.MoveFileEx(f, t, windows.MOVEFILE_REPLACE_EXISTING|windows.MOVEFILE_WRITE_THROUGH); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

// Replace puts tmp at dst. A running .exe cannot be replaced or deleted,
// but it can be renamed: dst is renamed aside first (dst.old-<pid>, or
// dst.old-<pid>-<n> when that name is taken by a copy that still runs),
// then tmp renamed into place; if that fails the aside copy is put back.
// cleanup removes the aside copy if it is no longer in use (else a later
// RemoveStaleAside does).
func Replace(tmp, dst string) (cleanup func(), err error) {
	RemoveStaleAside(dst)
	aside := dst + AsideSuffix + strconv.Itoa(os.Getpid())
	for n := 2; ; n++ {
		if _, err := os.Lstat(aside); os.IsNotExist(err) || n > 100 {
			break
		}
		aside = dst + AsideSuffix + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(n)
	}
	hadOld := true
	if err := rename(dst, aside); err != nil {
		if !os.IsNotExist(err) {
			return func() {}, err
		}
		hadOld = false
	}
	if err := rename(tmp, dst); err != nil {
		if hadOld {
			rename(aside, dst)
		}
		return func() {}, err
	}
	return func() { os.Remove(aside) }, nil
}

// RemoveStaleAside deletes copies of dst renamed aside earlier; those still
// running cannot be deleted and stay until a later call.
func RemoveStaleAside(dst string) {
	matches, _ := filepath.Glob(dst + AsideSuffix + "*")
	for _, m := range matches {
		os.Remove(m)
	}
}
