//go:build !windows

package release

import (
	"os"
	"testing"
)

// Activate and Rollback keep the installed binary's mode: a 0700 binary
// stays 0700 (never widened to 0755), a 0750 one 0750.
func TestActivateKeepsMode(t *testing.T) {
	needBins(t)
	for _, mode := range []os.FileMode{0o700, 0o750} {
		installed := copyTo(t, bins["app"], t.TempDir(), "app")
		if err := os.Chmod(installed, mode); err != nil {
			t.Fatal(err)
		}
		s := openLocked(t, installed, 3)
		r2, err := s.Stage(bins["app2"], "")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Activate(r2.ID); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(installed); err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("after Activate: %v mode %v, want %v", err, fi.Mode().Perm(), mode)
		}
		if _, err := s.Rollback(); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(installed); err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("after Rollback: %v mode %v, want %v", err, fi.Mode().Perm(), mode)
		}
		s.Unlock()
	}
}
