//go:build unix

package baton

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestLastGenerationRemovesItsFiles(t *testing.T) {
	dir, _ := os.MkdirTemp("", "bup")
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s.sock")
	pidFile := filepath.Join(dir, "app.pid")
	u := newTestUpgrader(t, Options{PIDFile: pidFile})
	ln, err := u.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // the app closing its listener must not unlink the file
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("socket file gone after the app closed its listener: %v", err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("PID file: %q %v", b, err)
	}
	u.Stop()
	for _, p := range []string{sock, pidFile} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind by the last generation: %v", p, err)
		}
	}
}

func TestStaleUnixSocketIsReplaced(t *testing.T) {
	dir, _ := os.MkdirTemp("", "bup")
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s.sock")
	old, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close() // a crashed service's leftover
	u := newTestUpgrader(t, Options{})
	if _, err := u.Listen("unix", sock); err != nil {
		t.Fatalf("Listen over a stale socket file: %v", err)
	}
	// A live one is not stolen.
	if _, err := newTestUpgrader(t, Options{}).Listen("unix", sock); err == nil {
		t.Fatal("a second service took over a live unix socket")
	}
}
