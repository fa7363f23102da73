//go:build linux

package wine

import (
	"context"
	"os"
	"path/filepath"
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
	addr := freePort(t)
	helloArgs := []string{"-idle-grace", migIdleGrace.String(), "-drain-timeout", "20s"}
	t.Run("library", func(t *testing.T) {
		s := startService(t, "winmig", append([]string{"-addr", addr}, helloArgs...)...)
		testIdleConnsMove(t, addr, s.log.Name(), func(ctx context.Context) (migStatus, error) {
			st, err := s.status(ctx)
			return migStatus{st.PID, len(st.Draining), st.ConnsTaken}, err
		}, s.upgrade)
	})
	t.Run("baton run", func(t *testing.T) {
		s := startSupervisor(t, "winmigsup", addr, helloArgs...)
		testIdleConnsMove(t, addr, filepath.Join(s.dir, "baton-run.log"), func(ctx context.Context) (migStatus, error) {
			st, err := s.status(ctx)
			// baton run's status has no conns_taken: the drains' reports count.
			return migStatus{st.PID, len(st.Draining), -1}, err
		}, s.upgrade)
	})
}

const migIdleGrace = time.Second

// migStatus is what the test reads from `baton status`.
type migStatus struct{ pid, draining, connsTaken int }

func testIdleConnsMove(t *testing.T, addr, logPath string, status func(context.Context) (migStatus, error), upgrade func(context.Context, ...string) upgradeReport) {
	const (
		clients  = 200
		upgrades = 4
		think    = 3 * migIdleGrace // every client is idle at each handover
	)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := status(ctx)
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

	prev := st.pid
	var taken []int
	for u := 1; u <= upgrades; u++ {
		rep := upgrade(ctx)
		if rep.ExitCode != 0 || !rep.OK || rep.Result == nil {
			t.Fatalf("upgrade %d: exit %d %s: %s", u, rep.ExitCode, rep.Code, rep.Error)
		}
		// The old generation goes as soon as its connections are passed
		// on (idle grace or not), and every client posts again meanwhile.
		next := rep.Result.PID
		before := load.Snapshot().TotalOK()
		for {
			st, err = status(ctx)
			if err == nil && st.draining == 0 && load.Snapshot().TotalOK() >= before+clients {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("upgrade %d: old generation %d still draining (%d) or clients not answered: %v", u, prev, st.draining, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if st.pid != next {
			t.Fatalf("upgrade %d: pid %d serves, want %d", u, st.pid, next)
		}
		taken = append(taken, st.connsTaken)
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
	// Each old generation reports what its drain passed on.
	log, err := os.ReadFile(logPath)
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
		t.Fatalf("%d drain reports in the log, want %d", len(migrated), upgrades)
	}
	for i, n := range migrated {
		if n < clients/2 {
			t.Errorf("drain %d passed on %d connections, want most of %d", i+1, n, clients)
		}
	}
	for u, n := range taken {
		if n >= 0 && n < clients/2 {
			t.Errorf("upgrade %d: baton status says the new generation took %d connections, want most of %d", u+1, n, clients)
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
