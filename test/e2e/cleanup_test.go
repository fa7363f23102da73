//go:build linux

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/proctest"
)

// runtimeFiles lists what the runtime directory holds for the service
// called name (its control socket, its generations' files).
func runtimeFiles(t *testing.T, name string) []string {
	t.Helper()
	ents, err := os.ReadDir(os.Getenv("BATON_RUNTIME_DIR"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), name+".") {
			out = append(out, e.Name())
		}
	}
	return out
}

// waitAllExited waits until every process the tests started has ended.
func waitAllExited(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, pid := range tracker.Live() {
		if _, err := tracker.WaitExit(ctx, pid); err != nil {
			t.Fatalf("process %d still running: %v", pid, err)
		}
	}
}

// TestCleanupStopAnswersAndLeavesNothing: `baton stop`, 20 times against a
// library hello and a hello under `baton run`: it always exits 0 (the
// answer always arrives), the service is gone when it returns, and the
// runtime directory holds nothing of the name any more.
func TestCleanupStopAnswersAndLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	for _, mode := range []string{"library", "supervised"} {
		t.Run(mode, func(t *testing.T) {
			for i := range 20 {
				name := "cstop" + mode[:3]
				addr := freeAddr(t, "tcp")
				var svc *proctest.Service
				if mode == "library" {
					svc, _ = startHello(t, name, "-addr", addr)
				} else {
					svc, _ = startSupervised(t, name, nil, "--listen", "tcp://"+addr, "--", bins["hello"], "-addr", addr)
					// A second generation: more files to clean up.
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					rep, err := svc.Upgrade(ctx)
					cancel()
					if err != nil || !rep.OK {
						t.Fatalf("upgrade: %v %+v", err, rep)
					}
				}
				code, out := runCLI("stop", "--name", svc.Name)
				if code != 0 {
					t.Fatalf("run %d: baton stop exited %d: %s", i, code, out)
				}
				if left := runtimeFiles(t, name); len(left) != 0 {
					t.Fatalf("run %d: after baton stop returned, the runtime directory still holds %v", i, left)
				}
				waitAllExited(t)
				if left := runtimeFiles(t, name); len(left) != 0 {
					t.Fatalf("run %d: after stop the runtime directory holds %v", i, left)
				}
			}
		})
	}
}

// TestCleanupSIGTERMLeavesNothing: SIGTERM to a library hello and to the
// supervisor of `baton run`: once they are gone nothing of the name is left
// in the runtime directory.
func TestCleanupSIGTERMLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	for _, mode := range []string{"library", "supervised"} {
		t.Run(mode, func(t *testing.T) {
			name := "cterm" + mode[:3]
			addr := freeAddr(t, "tcp")
			var svc *proctest.Service
			if mode == "library" {
				svc, _ = startHello(t, name, "-addr", addr)
			} else {
				svc, _ = startSupervised(t, name, nil, "--listen", "tcp://"+addr, "--", bins["hello"], "-addr", addr)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if rep, err := svc.Upgrade(ctx); err != nil || !rep.OK {
				t.Fatalf("upgrade: %v %+v", err, rep)
			}
			pid := svc.Cmd.Process.Pid // the supervisor
			if mode == "library" {
				st, err := svc.Status(ctx)
				if err != nil {
					t.Fatal(err)
				}
				pid = st.PID // the serving generation
			}
			if err := signalPID(t, pid, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			waitAllExited(t)
			if left := runtimeFiles(t, name); len(left) != 0 {
				t.Fatalf("after SIGTERM the runtime directory holds %v", left)
			}
		})
	}
}

// TestCleanupAfterSupervisorKill: a supervisor killed with SIGKILL leaves
// its files; the next `baton run` of that name sweeps them (and only that
// name's).
func TestCleanupAfterSupervisorKill(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	const name = "ckill"
	dir := os.Getenv("BATON_RUNTIME_DIR")
	addr := freeAddr(t, "tcp")
	cmd := exec.Command(bins["baton"], "run", "--name", name, "--listen", "tcp://"+addr, "--", bins["hello"], "-addr", addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tracker.Track(cmd.Process.Pid)
	svc := &proctest.Service{Name: name, Baton: bins["baton"], Env: os.Environ(), Cmd: cmd, Tracker: tracker}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitPhase(t, ctx, svc, "serving")
	if rep, err := svc.Upgrade(ctx); err != nil || !rep.OK {
		t.Fatalf("upgrade: %v %+v", err, rep)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitAllExited(t)
	left := runtimeFiles(t, name)
	t.Logf("left by the killed supervisor: %v", left)
	// Another service's files that look alike stay.
	others := []string{name + "x.gen2.bin", name + ".genX.gen2.bin"}
	for _, f := range others {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(filepath.Join(dir, f))
	}

	addr = freeAddr(t, "tcp")
	startSupervised(t, name, nil, "--listen", "tcp://"+addr, "--", bins["hello"], "-addr", addr)
	got := runtimeFiles(t, name)
	for _, f := range got {
		if strings.Contains(f, ".gen2.") && !slices.Contains(others, f) {
			t.Errorf("%s (the killed supervisor's generation 2) is still there: %v", f, got)
		}
	}
	for _, f := range others {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("another service's %s was removed: %v", f, err)
		}
	}
}
