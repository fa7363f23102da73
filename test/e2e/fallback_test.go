//go:build linux

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/loadgen"
)

// TestSupervisorCrashLoopFallsBack: a release that passes its switch and
// then keeps crashing (no probation asked) no longer makes the supervisor
// give up and close the port: after --max-restarts quick crashes it falls
// back to the release that served before, says so in its status, and the
// port answers throughout. (Before: "giving up", supervisor exit 1, port
// dark.)
func TestSupervisorCrashLoopFallsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	dir := t.TempDir()
	app := filepath.Join(dir, "plain")
	installCopy(t, bins["plain"], app)
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "supfallback", os.Environ(), "--listen", "tcp://"+addr,
		"--ready-delay", "50ms", "--restart-min", "50ms", "--max-restarts", "2", "--", app, "-idle-grace", "200ms")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const workers = 4
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{
		loadgen.KeepAliveGET: workers / 2, loadgen.Fresh: workers / 2}, MaxRequests: 2_000_000})
	if err != nil {
		t.Fatal(err)
	}
	waitResponses(t, load, st.PID, 20)

	installCopy(t, bins["plain-crashy"], app) // serves, then exits 2 a second after its start
	rep, err := svc.Upgrade(ctx)
	if err != nil || rep.ExitCode != 0 {
		t.Fatalf("upgrade to the crashing release: %v exit %d %s", err, rep.ExitCode, rep.Error)
	}
	// It crashes, is restarted twice, crashes again: then the fallback.
	var now = st
	waitFor(t, 60*time.Second, "the supervisor falling back to the previous release", func() bool {
		s, err := svc.Status(ctx)
		if err != nil {
			return false
		}
		now = s
		return s.Phase == "serving" && s.Last != nil && s.Last.Code == contract.CodeRolledBack
	})
	tracker.Track(now.PID)
	t.Logf("status after the crash loop: pid %d, last: %s", now.PID, now.Last.Error)
	if _, err := load.WaitPID(ctx, now.PID); err != nil {
		t.Fatal(err)
	}
	waitResponses(t, load, now.PID, 50)
	r := load.Stop()
	if v := r.PIDs[now.PID].Version; v != "dev" {
		t.Errorf("after the fallback pid %d serves %q, want the previous release (dev)", now.PID, v)
	}
	// (The supervisor answered status throughout: it did not give up.)
	// Connections queue on the supervisor's socket while no generation
	// runs: none is refused; requests cut inside a crashing process fail,
	// at most one per worker at each of its three deaths (the first, and
	// after each of the two restarts), and none once the fallback serves.
	const crashes = 3
	if n := r.TotalFailed(); n > workers*crashes {
		t.Errorf("%d failed requests, more than the %d three crashes can cut", n, workers*crashes)
	}
	fellBackAt := r.PIDs[now.PID].First // the fallback's first answer
	for _, f := range r.Failures {
		if f.Phase == "dial" {
			t.Errorf("connection refused during the crash loop (port dark): %+v", f)
		}
		if f.At.After(fellBackAt) {
			t.Errorf("a request failed after the fallback served: %+v", f)
		}
	}
	t.Logf("requests: %d ok, %d failed (cut inside a crashing process)", r.TotalOK(), r.TotalFailed())
}
