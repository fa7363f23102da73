//go:build !windows

package supervisor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A token file that its group or others may read or write is refused.
func TestReadTokenFileMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(testToken), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o620, 0o602, 0o644} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadTokenFile(p); !errors.Is(err, ErrTokenFile) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	for _, mode := range []os.FileMode{0o400, 0o600, 0o700} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadTokenFile(p); err != nil {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
}
