//go:build unix

package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/loadgen"
)

// TestCrashRightAfterHandoverIsSurvived: the new generation is killed a
// few milliseconds after `baton upgrade` returned 0. The old generation
// kept its sockets through the new one's probation: it starts its own
// binary again, the port never goes dark (no refused connection; under
// non-retried POST and fresh-connection load only the requests the killed
// process held are lost, none after the rescue answers), and
// the rescued service reports the upgrade as rolled back. (Before the
// probation, the old generation drained and exited: every connection was
// refused until somebody restarted the service.)
func TestCrashRightAfterHandoverIsSurvived(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end load test (-short)")
	}
	addr := freeAddr(t, "tcp")
	svc, _ := startHello(t, "probation", "-addr", addr, "-idle-grace", "200ms")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldPID := st.PID
	const workers = 8
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{
		loadgen.KeepAlivePOST: workers / 2, loadgen.Fresh: workers / 2,
	}, MaxRequests: 2_000_000})
	if err != nil {
		t.Fatal(err)
	}
	waitResponses(t, load, oldPID, 50)

	rep, err := svc.Upgrade(ctx)
	if err != nil || rep.ExitCode != 0 || rep.Result == nil {
		t.Fatalf("upgrade: %v exit %d %s %s", err, rep.ExitCode, rep.Error, rep.Stderr)
	}
	deadPID := rep.Result.PID
	if err := signalPID(t, deadPID, os.Kill); err != nil {
		t.Fatalf("killing the new generation: %v", err)
	}
	killedAt := time.Now()

	// A third generation, started by the old one, serves.
	var rescued int
	waitFor(t, 30*time.Second, "a rescued generation answering status", func() bool {
		st, err := svc.Status(ctx)
		if err != nil || st.PID == deadPID || st.PID == oldPID || st.PID <= 0 {
			return false
		}
		rescued = st.PID
		return true
	})
	tracker.Track(rescued)
	if _, err := load.WaitPID(ctx, rescued); err != nil {
		t.Fatalf("no response from the rescued generation %d: %v", rescued, err)
	}
	t.Logf("new generation %d killed; rescued generation %d answered %v after the kill", deadPID, rescued, time.Since(killedAt).Round(time.Millisecond))
	rescuedAt := time.Now()
	waitResponses(t, load, rescued, 200)
	rep2 := load.Stop()
	t.Logf("load:\n%s", rep2)
	// SIGKILL loses what the killed process held: at most one request per
	// worker, cut at the kill (reset or EOF). Nothing may be refused (the
	// port stayed open), and nothing fails once the rescue answers.
	if len(rep2.Failures) > workers {
		t.Errorf("%d failed requests, more than the %d the kill can cut", len(rep2.Failures), workers)
	}
	for _, f := range rep2.Failures {
		if f.Phase == "dial" || f.At.After(rescuedAt) || f.At.Before(killedAt.Add(-time.Second)) {
			t.Errorf("failure not explained by the kill: %+v", f)
		} else {
			t.Logf("cut by the kill: %s %s %s", f.Kind, f.Phase, f.Err)
		}
	}

	st, err = svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Last == nil || st.Last.OK || st.Last.Code != contract.CodeRolledBack {
		t.Errorf("status of the rescued generation: last upgrade %+v, want code %s", st.Last, contract.CodeRolledBack)
	} else {
		t.Logf("status says: %s", st.Last.Error)
	}
	// The old generation leaves once its rescue serves.
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if _, err := tracker.WaitExit(wctx, oldPID); err != nil {
		t.Errorf("the old generation did not exit after the rescue: %v", err)
	}
}

// TestProbationEndsWhenTheSuccessorHandsOver: upgrades back to back do
// not pile up old generations waiting for probations: a generation's
// probation ends as soon as its successor hands over in turn, so every
// old generation exits and MaxDraining is never reached.
func TestProbationEndsWhenTheSuccessorHandsOver(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	addr := freeAddr(t, "tcp")
	svc, _ := startHello(t, "probation-chain", "-addr", addr, "-idle-grace", "100ms")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pids := []int{st.PID}
	for i := 0; i < 12; i++ { // more than MaxDraining (8)
		rep, err := svc.Upgrade(ctx)
		if err != nil || rep.ExitCode != 0 || rep.Result == nil {
			t.Fatalf("upgrade %d: %v exit %d %s: %s %s", i+1, err, rep.ExitCode, rep.Code, rep.Error, rep.Stderr)
		}
		pids = append(pids, rep.Result.PID)
	}
	// Every replaced generation exits; none was rescued (status: the last
	// pid still serves, its last upgrade a success).
	for _, pid := range pids[:len(pids)-1] {
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := tracker.WaitExit(wctx, pid)
		wcancel()
		if err != nil {
			t.Errorf("generation %d did not exit: %v", pid, err)
		}
	}
	st, err = svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != pids[len(pids)-1] {
		t.Errorf("serving pid %d, want the last upgrade's %d (a rescue happened?)", st.PID, pids[len(pids)-1])
	}
}
