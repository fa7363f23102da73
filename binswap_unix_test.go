//go:build !windows

package baton

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-go/baton/internal/release"
)

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// installTestBinaries puts a copy of this test binary (a Go executable of
// this module) at dir/app with mode 0700, and a second one with other
// content (a byte appended) at dir/app-v2.
func installTestBinaries(t *testing.T) (app, v2 string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	app, v2 = filepath.Join(dir, "app"), filepath.Join(dir, "app-v2")
	if err := os.WriteFile(app, b, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v2, append(b, 0), 0o700); err != nil {
		t.Fatal(err)
	}
	return app, v2
}

// UpgradeTo goes through the releases store: the new release is installed
// with the installed binary's mode (0700 stays 0700, never widened), and an
// upgrade refused before anything was started puts the previous release
// back without marking the new one failed.
func TestUpgradeToKeepsModeAndPutsBack(t *testing.T) {
	app, v2 := installTestBinaries(t)
	old, want := fileSum(t, app), fileSum(t, v2)
	var during string
	var duringMode os.FileMode
	u := newTestUpgrader(t, Options{
		Binary:       app, // never started: the state is refused first
		MaxStateSize: 10,
		StateFunc: func() ([]byte, error) {
			// Called by Upgrade, after the switch, before any start.
			during = fileSum(t, app)
			if fi, err := os.Stat(app); err == nil {
				duringMode = fi.Mode().Perm()
			}
			return make([]byte, 11), nil
		},
	})
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	_, err := u.UpgradeTo(context.Background(), v2)
	if !errors.Is(err, ErrStateTooLarge) {
		t.Fatalf("UpgradeTo: %v, want ErrStateTooLarge", err)
	}
	if during != want {
		t.Fatalf("during the upgrade the installed binary was %s, want the new release %s", during, want)
	}
	if duringMode != 0o700 {
		t.Errorf("the new release was installed with mode %v, want 0700 (the installed binary's)", duringMode)
	}
	if got := fileSum(t, app); got != old {
		t.Fatalf("after the refused upgrade the installed binary is %s, want the previous one %s", got, old)
	}
	if fi, err := os.Stat(app); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("after the put-back: %v mode %v, want 0700", err, fi.Mode().Perm())
	}
	st, err := release.Open(app, release.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rels, err := st.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(rels) != 2 {
		t.Fatalf("%d releases, want 2 (the adopted one and the new one): %+v", len(rels), rels)
	}
	for _, r := range rels {
		if r.Failed {
			t.Errorf("release %s marked failed, but it was never started", r.ID)
		}
		if r.SHA256 == old && !(r.Installed && r.Current) {
			t.Errorf("the previous release is not installed and current again: %+v", r)
		}
	}
	if left, _ := filepath.Glob(app + ".*-*"); len(left) != 0 {
		t.Errorf("files left beside the installed binary: %v", left)
	}
	// The lock was released: the store can be locked again.
	if err := st.TryLock(); err != nil {
		t.Errorf("the releases lock is still held after UpgradeTo: %v", err)
	}
	st.Unlock()
}

// A candidate that is not an executable is refused with ErrBinary and the
// check's message; the installed binary is untouched and nothing is staged.
func TestUpgradeToRefusesAndChangesNothing(t *testing.T) {
	app, _ := installTestBinaries(t)
	old := fileSum(t, app)
	text := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(text, []byte("not a program\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	u := newTestUpgrader(t, Options{Binary: app})
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	_, err := u.UpgradeTo(context.Background(), text)
	if !errors.Is(err, ErrBinary) || !strings.Contains(err.Error(), "not an executable") {
		t.Fatalf("UpgradeTo(text file): %v, want ErrBinary with the check's message", err)
	}
	t.Logf("refusal: %v", err)
	if got := fileSum(t, app); got != old {
		t.Fatal("a refused candidate changed the installed binary")
	}
	if fi, _ := os.Stat(app); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v after a refusal, want 0700", fi.Mode().Perm())
	}
	st, err := release.Open(app, release.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rels, _ := st.List(); len(rels) != 0 {
		t.Errorf("a refused candidate staged releases: %+v", rels)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(app), ".app*")); len(left) != 0 {
		t.Errorf("temporary files left beside the installed binary: %v", left)
	}
	// A missing file is refused the same way.
	if _, err := u.UpgradeTo(context.Background(), filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrBinary) {
		t.Errorf("UpgradeTo(missing): %v, want ErrBinary", err)
	}
}
