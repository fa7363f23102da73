//go:build unix

package e2e

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proctest"
)

// Exit codes of the baton CLI (cmd/baton).
const (
	exitFailed = 1
	exitBusy   = 4
)

// TestFailedUpgradesLoseNothing replaces the installed binary with broken
// ones while load runs: each upgrade fails with a clear error and exit code,
// the running generation keeps serving, and no request fails. A good
// upgrade at the end proves the service is still upgradable.
func TestFailedUpgradesLoseNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end load test")
	}
	addr := freeAddr(t, "tcp")
	svc, bin := startHello(t, "fail", "-addr", addr, "-idle-grace", "500ms", "-ready-timeout", "2s")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	servingPID := st.PID
	load := startMixedLoad(t, ctx, addr, "", "")
	good := bin + ".good"
	installCopy(t, bin, good)

	stillServing := func(t *testing.T) {
		t.Helper()
		st, err := svc.Status(ctx)
		if err != nil {
			t.Fatalf("status after the failed upgrade: %v", err)
		}
		if st.PID != servingPID || st.Phase != "serving" {
			t.Fatalf("after a failed upgrade pid %d is %s; want pid %d serving", st.PID, st.Phase, servingPID)
		}
		if st.Last == nil || st.Last.OK {
			t.Fatalf("status does not report the failed upgrade: %+v", st.Last)
		}
		waitResponses(t, load.tcp, servingPID, 1) // the old generation still answers
	}
	restore := func() { installCopy(t, good, bin) }

	t.Run("exits before ready", func(t *testing.T) {
		installCopy(t, bins["badapp-exit"], bin)
		defer restore()
		rep, err := svc.Upgrade(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.ExitCode != exitFailed || rep.OK || rep.Code != "child_exited" {
			t.Fatalf("exit %d ok=%v code=%q, want exit 1 and code child_exited (%s)", rep.ExitCode, rep.OK, rep.Code, rep.Error)
		}
		if rep.ChildExit == nil || rep.ChildExit.ExitCode != 3 || !strings.Contains(rep.ChildExit.StderrTail, "boom: configuration file") {
			t.Fatalf("child exit details missing or wrong: %+v", rep.ChildExit)
		}
		if !strings.Contains(rep.Error, "exit code 3") {
			t.Errorf("error message %q does not name the exit code", rep.Error)
		}
		stillServing(t)
	})

	t.Run("never ready", func(t *testing.T) {
		installCopy(t, bins["badapp-hang"], bin)
		defer restore()
		rep, err := svc.Upgrade(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.ExitCode != exitFailed || rep.Code != "ready_timeout" {
			t.Fatalf("exit %d code=%q, want exit 1 and ready_timeout (%s)", rep.ExitCode, rep.Code, rep.Error)
		}
		assertKilled(t, rep.Error)
		stillServing(t)
	})

	t.Run("serves but never ready", func(t *testing.T) {
		// A release that serves before it would call Ready, then hangs:
		// connections must not go to it (they would be reset when it is
		// killed at the ready timeout).
		installCopy(t, bins["hello-hang"], bin)
		defer restore()
		rep, err := svc.Upgrade(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.ExitCode != exitFailed || rep.Code != "ready_timeout" {
			t.Fatalf("exit %d code=%q, want exit 1 and ready_timeout (%s)", rep.ExitCode, rep.Code, rep.Error)
		}
		assertKilled(t, rep.Error)
		stillServing(t)
	})

	t.Run("busy", func(t *testing.T) {
		installCopy(t, bins["badapp-hang"], bin)
		defer restore()
		var wg sync.WaitGroup
		var first proctest.UpgradeReport
		wg.Add(1)
		go func() {
			defer wg.Done()
			first, _ = svc.Upgrade(ctx)
		}()
		waitPhase(t, ctx, svc, "upgrading") // the first upgrade is under way
		rep, err := svc.Upgrade(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.ExitCode != exitBusy || rep.Code != "busy" {
			t.Fatalf("second upgrade: exit %d code=%q, want exit 4 and busy (%s)", rep.ExitCode, rep.Code, rep.Error)
		}
		wg.Wait()
		if first.Code != "ready_timeout" {
			t.Fatalf("first upgrade: code %q, want ready_timeout", first.Code)
		}
		stillServing(t)
	})

	t.Run("binary missing", func(t *testing.T) {
		if err := os.Remove(bin); err != nil {
			t.Fatal(err)
		}
		defer restore()
		rep, err := svc.Upgrade(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.ExitCode != exitFailed || rep.Code != "binary" || !strings.Contains(rep.Error, "no such file") {
			t.Fatalf("exit %d code=%q error=%q, want exit 1, code binary, 'no such file'", rep.ExitCode, rep.Code, rep.Error)
		}
		stillServing(t)
	})

	t.Run("binary not executable", func(t *testing.T) {
		if err := os.Chmod(bin, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(bin, 0o755)
		rep, err := svc.Upgrade(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.ExitCode != exitFailed || rep.Code != "binary" || !strings.Contains(rep.Error, "not executable") {
			t.Fatalf("exit %d code=%q error=%q, want exit 1, code binary, 'not executable'", rep.ExitCode, rep.Code, rep.Error)
		}
		stillServing(t)
	})

	t.Run("good upgrade afterwards", func(t *testing.T) {
		rep, err := svc.Upgrade(ctx)
		if err != nil || !rep.OK {
			t.Fatalf("upgrade after the failures: %v %+v", err, rep)
		}
		if _, err := load.tcp.WaitPID(ctx, rep.Result.PID); err != nil {
			t.Fatal(err)
		}
	})
	load.stopAndCheck(t)
}

// assertKilled checks that the pid named in a ready-timeout error is gone.
func assertKilled(t *testing.T, msg string) {
	t.Helper()
	m := regexp.MustCompile(`pid (\d+)`).FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("error %q does not name the pid", msg)
	}
	pid, _ := strconv.Atoi(m[1])
	if _, err := os.Stat("/proc/" + m[1]); err == nil && !proctest.IsZombie(pid) {
		t.Fatalf("the new generation (pid %d) that never got ready is still running", pid)
	}
}

// TestStateTooLarge: a state blob over the bound is refused before anything
// is started, with a clear error, and the service keeps serving.
func TestStateTooLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	svc, _ := startHello(t, "state", "-addr", addr, "-state-pad", strconv.Itoa(17<<20))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{loadgen.KeepAlivePOST: 2, loadgen.Fresh: 2}, MaxRequests: 500_000})
	if err != nil {
		t.Fatal(err)
	}
	waitResponses(t, load, st.PID, 100) // the load runs before the upgrade
	rep, err := svc.Upgrade(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ExitCode != exitFailed || rep.Code != "state" || !strings.Contains(rep.Error, "too large") {
		t.Fatalf("exit %d code=%q error=%q, want exit 1, code state, 'too large'", rep.ExitCode, rep.Code, rep.Error)
	}
	waitResponses(t, load, st.PID, 100) // and after the refusal, on the same generation
	r := load.Stop()
	if r.TotalFailed() != 0 || r.TotalOK() == 0 {
		t.Fatalf("load: %s", r)
	}
}

// TestDrainingBound: old generations that still drain long requests do not
// block the next upgrade, up to -max-draining; past it the answer is a
// clear "too many draining" (exit 4) and the service keeps serving.
func TestDrainingBound(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	svc, _ := startHello(t, "bound", "-addr", addr, "-max-draining", "2", "-idle-grace", "200ms")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// One long request in flight per generation keeps it draining: on a
	// connection the serving generation accepted.
	long := func() *heldRequest {
		st, err := svc.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		h := holdRequest(t, addr, 8000)
		if h.PID != st.PID {
			t.Fatalf("the long request went to pid %d, the serving generation is %d", h.PID, st.PID)
		}
		return h
	}
	var slow []*heldRequest
	for i := 0; i < 2; i++ {
		slow = append(slow, long())
		rep, err := svc.Upgrade(ctx)
		if err != nil || !rep.OK {
			t.Fatalf("upgrade %d while %d generation(s) drain: %v %+v", i+1, i, err, rep)
		}
	}
	slow = append(slow, long())
	rep, err := svc.Upgrade(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ExitCode != exitBusy || rep.Code != "too_many_draining" || !strings.Contains(rep.Error, "2 older generations are still draining") {
		t.Fatalf("third upgrade: exit %d code %q error %q; want exit 4, too_many_draining", rep.ExitCode, rep.Code, rep.Error)
	}
	st, err := svc.Status(ctx)
	if err != nil || len(st.Draining) != 2 {
		t.Fatalf("status: %v draining=%v, want 2 draining pids", err, st.Draining)
	}
	// The slow requests finish on the generations that took them.
	for _, h := range slow {
		if err := h.wait(); err != nil {
			t.Fatalf("the long request on pid %d: %v", h.PID, err)
		}
	}
	// Once they are gone, upgrades work again.
	for _, pid := range st.Draining {
		if _, err := tracker.WaitExit(ctx, pid); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err := svc.Upgrade(ctx); err != nil || !rep.OK {
		t.Fatalf("upgrade after the drains: %v %+v", err, rep)
	}
}
