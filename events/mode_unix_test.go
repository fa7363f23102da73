//go:build unix

package events

import (
	"os"
	"testing"

	"github.com/baton-go/baton/internal/testenv"
)

// The events file is the owner's only (Windows has no such mode bits: the
// runtime directory's ACL guards it there).
func TestFileMode(t *testing.T) {
	path := Path(testenv.TempDir(t), "web")
	l, err := Open(path, "web", "supervisor", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Emit(Record{Name: Ready}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode: %v %v", fi.Mode(), err)
	}
}
