package release

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A file system too small for the copies is refused before anything is
// written: a real 4 MiB tmpfs (needs root: mount).
func TestCheckDiskSpace(t *testing.T) {
	needBins(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("cannot mount a small tmpfs here (%v); the disk check is exercised where it can", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	installed := copyTo(t, bins["app"], dir, "app")
	fi, err := os.Stat(bins["app2"])
	if err != nil {
		t.Fatal(err)
	}
	if 2*fi.Size()+1<<20 < 4<<20 {
		t.Skipf("the test binary (%d bytes) is too small to fill the file system", fi.Size())
	}
	rep, err := Check(context.Background(), bins["app2"], CheckOptions{Installed: installed})
	mustFail(t, rep, err, ErrDiskSpace, "disk", filepath.Base(dir), "free")
}
