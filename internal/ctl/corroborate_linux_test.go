package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-go/baton/internal/contract"
)

// TestCorroborate: the system confirms a status's binary only when the
// process serving the endpoint (holding its socket) runs it, or, under a
// supervisor, when its child that serves runs a copy of it.
func TestCorroborate(t *testing.T) {
	dir := useTempDir(t)
	ln, err := Listen("svc")
	if err != nil {
		t.Fatal(err)
	}
	srv := Serve(ln, func(ctx context.Context, req Request) Response { return OKResponse("status") }, nil)
	defer srv.Close()
	_, peer, err := DoPeer(context.Background(), "svc", Request{Op: OpStatus})
	if err != nil {
		t.Fatal(err)
	}
	if peer.PID != os.Getpid() {
		t.Errorf("peer pid %d, want ours (%d): SO_PEERCRED names the process that listened", peer.PID, os.Getpid())
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(filepath.Dir(dir), "other")
	copyFile(t, exe, other)
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	lib := contract.Status{PID: os.Getpid()}
	if err := Corroborate("svc", peer, lib, exe); err != nil {
		t.Errorf("a library service running its binary: %v", err)
	}
	refused := func(what string, st contract.Status, path, says string) {
		t.Helper()
		err := Corroborate("svc", peer, st, path)
		if !errors.Is(err, ErrUncorroborated) || !strings.Contains(err.Error(), says) {
			t.Errorf("%s: %v, want ErrUncorroborated saying %q", what, err, says)
		}
	}
	refused("a path the service does not run (even with the same content)", lib, other, "runs "+exe+", not "+other)
	ppid := os.Getppid() // go test: holds no control socket, is not our child
	refused("a process that does not hold the socket", contract.Status{PID: ppid}, exe, fmt.Sprintf("process %d does not hold the control socket", ppid))
	if err := Corroborate("nosuch", peer, lib, exe); !errors.Is(err, ErrUncorroborated) || !strings.Contains(err.Error(), "no listening socket is bound at") {
		t.Errorf("an endpoint nobody serves: %v", err)
	}

	// Under a supervisor (this process, holding the socket), the serving
	// generation is a child running a copy of the installed binary.
	gen := exec.Command(other)
	gen.Env = []string{"BATON_CTL_TEST_WAIT=1"}
	stdin, err := gen.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := gen.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); gen.Wait() }()
	sup := contract.Status{PID: gen.Process.Pid, Supervisor: &contract.SupervisorInfo{PID: os.Getpid()}}
	if err := Corroborate("svc", peer, sup, exe); err != nil {
		t.Errorf("a supervisor whose generation runs a copy of the binary: %v", err)
	}
	text := filepath.Join(filepath.Dir(dir), "text")
	if err := os.WriteFile(text, []byte("not the binary\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	refused("a generation that runs another program", sup, text, "runs "+other+", which is not a copy of "+text)
	notChild := contract.Status{PID: ppid, Supervisor: &contract.SupervisorInfo{PID: os.Getpid()}}
	refused("a serving generation that is not the supervisor's child", notChild, exe, "is not a child of the supervisor")
}
