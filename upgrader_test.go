package baton

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func newTestUpgrader(t *testing.T, opts Options) *Upgrader {
	t.Helper()
	opts.UpgradeSignal = NoSignal
	u, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Stop)
	return u
}

func TestUpgradeBeforeReadyAndAfterStop(t *testing.T) {
	u := newTestUpgrader(t, Options{})
	if _, err := u.Upgrade(context.Background()); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Upgrade before Ready: %v, want ErrNotReady", err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	u.Stop()
	if _, err := u.Upgrade(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Upgrade after Stop: %v, want ErrStopped", err)
	}
	select {
	case <-u.Exit():
	default:
		t.Fatal("Exit not closed after Stop")
	}
	if _, err := u.Listen("tcp", "127.0.0.1:0"); !errors.Is(err, ErrStopped) {
		t.Fatalf("Listen after Stop: %v", err)
	}
}

func TestStateTooLargeIsRefusedBeforeStarting(t *testing.T) {
	u := newTestUpgrader(t, Options{
		Binary:       "/bin/true", // must never be started
		MaxStateSize: 10,
		StateFunc:    func() ([]byte, error) { return make([]byte, 11), nil },
	})
	u.Ready()
	_, err := u.Upgrade(context.Background())
	if !errors.Is(err, ErrStateTooLarge) {
		t.Fatalf("Upgrade: %v, want ErrStateTooLarge", err)
	}
	if st := u.Status(); st.Phase != PhaseServing || st.Last == nil || st.Last.Code != "state" {
		t.Fatalf("status after the refusal: %+v", st)
	}
}

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

func TestBadOptions(t *testing.T) {
	if _, err := New(Options{Name: "../x", UpgradeSignal: NoSignal}); err == nil || !strings.Contains(err.Error(), "invalid control endpoint name") {
		t.Fatalf("bad name accepted: %v", err)
	}
	u := newTestUpgrader(t, Options{})
	if _, err := u.Listen("udp", ":0"); err == nil {
		t.Fatal("Listen accepted udp")
	}
	if _, err := u.ListenPacket("tcp", ":0"); err == nil {
		t.Fatal("ListenPacket accepted tcp")
	}
	if _, err := u.File("", nil); err == nil {
		t.Fatal("File accepted an empty name")
	}
}
