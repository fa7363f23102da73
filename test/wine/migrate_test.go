//go:build linux

package wine

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
)

// TestIdleConnsMoveOnWindows (issue 11): hello.exe under Wine, 200
// keep-alive clients that each sleep longer than the idle grace between
// non-retried POSTs, a few upgrades: no request fails, and every new
// generation takes over the idle connections its predecessor passed on
// (WSADuplicateSocket, served through events: winsock.EventConn), so the
// old one has nothing left to drain.
func TestIdleConnsMoveOnWindows(t *testing.T) {
	const (
		clients   = 200
		upgrades  = 4
		idleGrace = time.Second
		think     = 3 * time.Second // > idleGrace: every client is idle at each handover
	)
	addr := freePort(t)
	s := startService(t, "winmig", "-addr", addr, "-idle-grace", idleGrace.String(), "-drain-timeout", "20s")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := s.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{loadgen.KeepAlivePOST: clients},
		Pause: think, Stagger: think, Timeout: 30 * time.Second, MaxRequests: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	// Every client has its connection before the first upgrade.
	waitAnswers(ctx, t, load, clients)

	prev := st.PID
	var taken []int
	for u := 1; u <= upgrades; u++ {
		rep := s.upgrade(ctx)
		if rep.ExitCode != 0 || !rep.OK || rep.Result == nil {
			t.Fatalf("upgrade %d: exit %d %s: %s", u, rep.ExitCode, rep.Code, rep.Error)
		}
		// The old generation goes as soon as its connections are passed
		// on (idle grace or not), and every client posts again meanwhile.
		next := rep.Result.PID
		before := load.Snapshot().TotalOK()
		for {
			st, err = s.status(ctx)
			if err == nil && len(st.Draining) == 0 && load.Snapshot().TotalOK() >= before+clients {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("upgrade %d: old generation %d still draining (%v) or clients not answered: %v", u, prev, st.Draining, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if st.PID != next {
			t.Fatalf("upgrade %d: pid %d serves, want %d", u, st.PID, next)
		}
		taken = append(taken, st.ConnsTaken)
		prev = next
	}
	rep := load.Stop()
	t.Logf("load under Wine:\n%s", rep)
	t.Logf("connections taken over by each new generation (baton status conns_taken): %v of %d clients", taken, clients)
	for i, f := range rep.Failures {
		if i < 10 {
			t.Errorf("failure: %+v", f)
		}
	}
	if n := rep.TotalFailed(); n != 0 {
		t.Errorf("%d requests failed", n)
	}
	for u, n := range taken {
		if n < clients/2 {
			t.Errorf("upgrade %d: the new generation took %d connections, want most of %d", u+1, n, clients)
		}
	}
	// Each old generation reports what its drain passed on.
	log, err := os.ReadFile(s.log.Name())
	if err != nil {
		t.Fatal(err)
	}
	var migrated []int
	var took []string
	for _, m := range drainedRE.FindAllSubmatch(log, -1) {
		n, _ := strconv.Atoi(string(m[2]))
		migrated = append(migrated, n)
		took = append(took, string(m[1]))
	}
	t.Logf("connections passed on by each old generation's drain (httpdrain Report.Migrated): %v; drain took %v", migrated, took)
	if len(migrated) < upgrades {
		t.Errorf("%d drain reports in the log, want %d", len(migrated), upgrades)
	}
	for i, n := range migrated {
		if n < clients/2 {
			t.Errorf("drain %d passed on %d connections, want most of %d", i+1, n, clients)
		}
	}
}

// drainedRE matches hello's last line: how long the drain took and how
// many connections it passed on.
var drainedRE = regexp.MustCompile(`msg=drained .*took=(\S+) .*migrated=(\d+)`)

// waitAnswers waits until the load has n successful answers.
func waitAnswers(ctx context.Context, t *testing.T, load *loadgen.Load, n int64) {
	t.Helper()
	for load.Snapshot().TotalOK() < n {
		if ctx.Err() != nil {
			t.Fatalf("only %d answers, want %d", load.Snapshot().TotalOK(), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
