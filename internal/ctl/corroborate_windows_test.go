package ctl

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-go/baton/internal/contract"
)

// TestServerIdentifiedAndCorroborated: the client learns from the system
// which process serves the pipe (ours, admitted: our own user), and a
// status's binary is confirmed only when that process runs it. (Under
// Wine every process runs as the same user: that a server of another user
// is refused can only be seen on real Windows.)
func TestServerIdentifiedAndCorroborated(t *testing.T) {
	name := pipeName(t, "corr")
	serveID(t, listen(t, name), "a")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, peer, err := DoPeer(ctx, name, Request{Op: OpStatus})
	if err != nil {
		t.Fatal(err)
	}
	if peer.PID != os.Getpid() {
		t.Fatalf("the pipe's server is pid %d, want ours (%d)", peer.PID, os.Getpid())
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	lib := contract.Status{PID: os.Getpid()}
	if err := Corroborate(name, peer, lib, exe); err != nil {
		t.Errorf("a library service running its binary: %v", err)
	}
	// Not t.TempDir, whose os.RemoveAll fails under Wine.
	dir, err := os.MkdirTemp("", "ctlwin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(filepath.Join(dir, "other.exe")); os.Remove(dir) })
	other := filepath.Join(dir, "other.exe")
	if err := os.WriteFile(other, []byte("MZ not this one"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Corroborate(name, peer, lib, other); !errors.Is(err, ErrUncorroborated) || !strings.Contains(err.Error(), "not "+other) {
		t.Errorf("a path the service does not run: %v, want ErrUncorroborated", err)
	}
	notServer := contract.Status{PID: os.Getpid() + 4} // any other pid
	if err := Corroborate(name, peer, notServer, exe); !errors.Is(err, ErrUncorroborated) || !strings.Contains(err.Error(), "answered on the pipe") {
		t.Errorf("a status naming another process than the pipe's server: %v, want ErrUncorroborated", err)
	}
}
