package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"time"

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

// Replace puts tmp at dst: MoveFileEx with MOVEFILE_REPLACE_EXISTING (one
// atomic step, as a rename on Unix). A running .exe cannot be replaced or
// deleted, but it can be renamed: when the replace is refused, dst is
// renamed aside first (dst.old-<pid>, or dst.old-<pid>-<n> when that name
// is taken by a copy that still runs), then tmp renamed into place; if that
// fails the aside copy is put back. Between those two renames there is no
// file at dst; Recover repairs a crash there. cleanup removes
// the aside copy if it is no longer in use (else a later RemoveStaleAside
// does).
func Replace(tmp, dst string) (cleanup func(), err error) {
	RemoveStaleAside(dst)
	err = rename(tmp, dst)
	if err == nil || !inUse(err) {
		return func() {}, err
	}
	aside := dst + AsideSuffix + strconv.Itoa(os.Getpid())
	for n := 2; ; n++ {
		if _, err := os.Lstat(aside); os.IsNotExist(err) || n > 100 {
			break
		}
		aside = dst + AsideSuffix + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(n)
	}
	if err := rename(dst, aside); err != nil {
		return func() {}, err
	}
	if err := rename(tmp, dst); err != nil {
		rename(aside, dst)
		return func() {}, err
	}
	return func() { os.Remove(aside) }, nil
}

// inUse reports a replace refused because dst is open or running.
func inUse(err error) bool {
	return errors.Is(err, windows.ERROR_ACCESS_DENIED) || errors.Is(err, windows.ERROR_SHARING_VIOLATION)
}

// RemoveStaleAside deletes copies of dst renamed aside earlier; those still
// running cannot be deleted and stay until a later call. While dst itself
// is missing nothing is deleted: an aside copy may be the only one left
// (see Recover).
func RemoveStaleAside(dst string) {
	if _, err := os.Lstat(dst); err != nil {
		return
	}
	matches, _ := filepath.Glob(dst + AsideSuffix + "*")
	for _, m := range matches {
		os.Remove(m)
	}
}

// Recover puts an aside copy back at dst when dst is missing: a crash
// between the two renames of Replace. Of several copies, the one written
// last (renames keep the modification time) is taken. It reports whether
// it restored one.
func Recover(dst string) bool {
	if _, err := os.Lstat(dst); !os.IsNotExist(err) {
		return false
	}
	matches, _ := filepath.Glob(dst + AsideSuffix + "*")
	newest, at := "", time.Time{}
	for _, m := range matches {
		if fi, err := os.Lstat(m); err == nil && (newest == "" || fi.ModTime().After(at)) {
			newest, at = m, fi.ModTime()
		}
	}
	return newest != "" && rename(newest, dst) == nil
}

// KeepAside keeps dst's current content at aside by renaming it: a running
// .exe cannot be replaced, but it can be renamed (Recover puts it back if
// nothing takes its place). hadOld is false when there is no dst.
func KeepAside(dst, aside string) (hadOld bool, err error) {
	if err := rename(dst, aside); err != nil {
		if os.IsNotExist(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}
