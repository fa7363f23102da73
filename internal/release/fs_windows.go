package release

import (
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/windows"
)

// syncDir: NTFS journals renames done with MOVEFILE_WRITE_THROUGH; there is
// no directory handle to flush.
func syncDir(string) error { return nil }

// asideSuffix is the baton library's (binswap.go): the library removes
// such copies too once they are no longer running.
const asideSuffix = ".old-"

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

// replaceFile puts tmp at dst. A running .exe cannot be replaced or
// deleted, but it can be renamed: dst is renamed aside first
// (dst.old-<pid>), then tmp renamed into place; if that fails the aside
// copy is put back. The aside copy is removed when it is no longer in use
// (now, or by a later call: removeStaleAside).
func replaceFile(tmp, dst string) (cleanup func(), err error) {
	removeStaleAside(dst)
	// dst.old-<pid>, as the library names it; when that name is taken (a
	// copy renamed aside earlier by us that still runs), dst.old-<pid>-<n>.
	aside := dst + asideSuffix + strconv.Itoa(os.Getpid())
	for n := 2; ; n++ {
		if _, err := os.Lstat(aside); os.IsNotExist(err) || n > 100 {
			break
		}
		aside = dst + asideSuffix + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(n)
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

// removeStaleAside deletes copies renamed aside earlier; those still
// running cannot be deleted and stay until a later call.
func removeStaleAside(dst string) {
	matches, _ := filepath.Glob(dst + asideSuffix + "*")
	for _, m := range matches {
		os.Remove(m)
	}
}
