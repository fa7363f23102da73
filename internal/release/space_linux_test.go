package release

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
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

// Enough room for the staged copy and the installed copy passes, also when
// the checks' private copy is made in the releases directory on that file
// system (it is the staged copy, not one more).
func TestCheckDiskSpaceEnough(t *testing.T) {
	needBins(t)
	fi, err := os.Stat(bins["app2"])
	if err != nil {
		t.Fatal(err)
	}
	app, err := os.Stat(bins["app"])
	if err != nil {
		t.Fatal(err)
	}
	// The installed binary and its copy kept as a release (first install),
	// two copies of the new one (staged, installed), the 1 MiB of slack the
	// check asks for and 1 MiB of file system overhead; not room for a
	// third copy of the new one.
	size := 2*app.Size() + 2*fi.Size() + 2<<20
	if fi.Size() < 2<<20 {
		t.Skip("test binary too small to tell two copies from three")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755,size="+strconv.FormatInt(size, 10)); err != nil {
		t.Skipf("cannot mount a small tmpfs here (%v)", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	installed := copyTo(t, bins["app"], dir, "app")
	s := openLocked(t, installed, 3) // makes the releases directory
	rep, rel, err := s.CheckAndStage(context.Background(), bins["app2"], CheckOptions{})
	if err != nil {
		t.Fatalf("%v\n%s", err, rep)
	}
	if err := s.Activate(rel.ID); err != nil {
		t.Fatal(err)
	}
}
