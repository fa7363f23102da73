//go:build unix

package supervisor

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSaveBinaryFollowsLinks: a command given through a symbolic link
// (/bin/sh -> dash) is saved as the file it points to, not as the link (a
// relative link copied into the runtime directory dangles there).
func TestSaveBinaryFollowsLinks(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "real"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(dir, "alias")); err != nil {
		t.Skipf("no symbolic links here: %v", err)
	}
	other := t.TempDir()
	dst := filepath.Join(other, "saved")
	if err := saveBinary(filepath.Join(dir, "alias"), dst); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() {
		t.Fatalf("saved binary is %v, want a regular file", fi.Mode())
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "#!/bin/sh\n" {
		t.Fatalf("saved binary reads %q, %v", b, err)
	}
}
