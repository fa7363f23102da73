package atomicfile

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A file that is not running is replaced in one step (nothing renamed
// aside); a crash between the two renames of a rename-aside switch is
// repaired by Recover, which puts the copy written last back.
func TestReplaceAndRecover(t *testing.T) {
	dir, err := os.MkdirTemp("", "atomicfile") // not t.TempDir: os.RemoveAll fails under Wine
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	dst := filepath.Join(dir, "app.exe")
	if err := os.WriteFile(dst, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(dst, 0o755, func(w io.Writer) error { _, err := io.WriteString(w, "v2"); return err }); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(dst + AsideSuffix + "*"); len(left) != 0 {
		t.Fatalf("a file not in use was renamed aside: %v", left)
	}
	// The state after a crash between "dst -> aside" and "tmp -> dst".
	old := dst + AsideSuffix + "111"
	newer := dst + AsideSuffix + "222"
	if err := os.WriteFile(old, []byte("v0"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(old, time.Now().Add(-time.Hour), time.Now().Add(-time.Hour))
	if err := os.Rename(dst, newer); err != nil {
		t.Fatal(err)
	}
	RemoveStaleAside(dst) // must not delete the only copies
	if !Recover(dst) {
		t.Fatal("Recover did not restore the missing file")
	}
	if b, _ := os.ReadFile(dst); string(b) != "v2" {
		t.Fatalf("Recover restored %q, want the copy written last (v2)", b)
	}
	if Recover(dst) {
		t.Error("Recover with the file present changed something")
	}
}
