//go:build linux

package wine

import (
	"context"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
)

// TestCrashAfterHandoverOnWindows: hello.exe (library mode) under Wine is
// upgraded, and the new generation is ended with TerminateProcess right
// after baton upgrade returned. The old generation kept its listening
// socket through the probation (baton's Windows listener only stops
// accepting when the app closes it): it starts its own exe again on that
// socket, no connection is refused, and the rescued generation reports
// the upgrade as rolled back.
func TestCrashAfterHandoverOnWindows(t *testing.T) {
	addr := freePort(t)
	s := startService(t, "winrescue", "-addr", addr, "-idle-grace", "300ms")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := s.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const workers = 4
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{
		loadgen.KeepAlivePOST: workers / 2, loadgen.Fresh: workers / 2,
	}, Pause: 5 * time.Millisecond, MaxRequests: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := load.WaitPID(ctx, st.PID); err != nil {
		t.Fatal(err)
	}
	rep := s.upgrade(ctx)
	if rep.ExitCode != 0 || rep.Result == nil {
		t.Fatalf("upgrade: exit %d %s: %s", rep.ExitCode, rep.Code, rep.Error)
	}
	dead := rep.Result.PID
	terminateProcess(t, ctx, dead)
	killedAt := time.Now()

	var rescued int
	for rescued == 0 {
		now, err := s.status(ctx)
		if err == nil && now.PID != dead && now.PID != st.PID && now.PID > 0 && now.Phase == "serving" {
			rescued = now.PID
			if now.Last == nil || now.Last.Code != "rolled_back" {
				t.Errorf("status of the rescued generation: last upgrade %+v, want rolled_back", now.Last)
			} else {
				t.Logf("status says: %s", now.Last.Error)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no rescued generation serves: %v %+v", err, now)
		}
		time.Sleep(100 * time.Millisecond) // poll pace (each status is a baton.exe run under Wine)
	}
	if _, err := load.WaitPID(ctx, rescued); err != nil {
		t.Fatalf("no response from the rescued generation %d: %v", rescued, err)
	}
	rescuedAt := time.Now()
	t.Logf("new generation %d terminated; rescued generation %d serves (%v after the kill)", dead, rescued, rescuedAt.Sub(killedAt).Round(time.Millisecond))
	r := load.Stop()
	t.Logf("load under Wine:\n%s", r)
	if len(r.Failures) > workers {
		t.Errorf("%d failed requests, more than the %d the kill can cut", len(r.Failures), workers)
	}
	for _, f := range r.Failures {
		if f.Phase == "dial" || f.At.After(rescuedAt) {
			t.Errorf("failure not explained by the kill: %+v", f)
		}
	}
}
