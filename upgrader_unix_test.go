//go:build unix

package baton

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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

// Under `baton run`, the supervisor's drain signal (its fallback when the
// link is gone) drains the generation through Exit instead of killing it:
// SIGUSR1 would end this test process if it were not caught.
func TestSupervisedDrainSignalClosesExit(t *testing.T) {
	t.Setenv(envSupervisor, "test")
	t.Setenv(envDrainSignal, strconv.Itoa(int(syscall.SIGUSR1)))
	u := newTestUpgrader(t, Options{})
	defer u.Stop()
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	select {
	case <-u.Exit():
	case <-time.After(10 * time.Second):
		t.Fatal("the drain signal did not close Exit")
	}
	if _, err := ln.Accept(); err == nil {
		t.Error("still accepting after the drain signal")
	}
}
