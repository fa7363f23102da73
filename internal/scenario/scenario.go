// Package scenario runs the upgrade-under-load scenario shared by `make
// demo` and `make bench`: examples/hello served on loopback, the mixed
// non-retrying load, a series of upgrades through the real `baton` CLI,
// and optionally one deliberately failing upgrade. For comparison, it can
// run a peer app (another hot-upgrade library) under the same load instead.
package scenario

import (
	"context"
	"fmt"
	"github.com/baton-go/baton/internal/contract"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proctest"
)

// Config describes one run.
type Config struct {
	Upgrades     int
	Interval     time.Duration // between upgrade triggers
	Workers      map[loadgen.Kind]int
	IdleGrace    time.Duration
	DrainTimeout time.Duration
	StartupDelay time.Duration // hello's pretend start-up work
	FailingLast  bool          // finish with an upgrade to a binary that crashes
	Progress     io.Writer     // one line per event (nil: quiet)
	// Supervised runs hello under `baton run` (sockets owned by the
	// supervisor) instead of stand-alone, and measures the supervisor at
	// idle after the upgrades.
	Supervised bool
	IdleFor    time.Duration // how long the supervisor's idle CPU is measured (default 5s)
	// Peer runs a peer app (PeerTableflip) instead of hello, upgraded by
	// SIGHUP to the pid in its PID file; Supervised, FailingLast,
	// IdleGrace and StartupDelay do not apply to it.
	Peer string
	// HelloDefaults runs hello (and `baton run`) with their default flags:
	// only the address and the name are passed, and IdleGrace,
	// DrainTimeout and StartupDelay are not. DrainTimeout, when set,
	// still bounds the wait for old generations to exit (default 30s,
	// hello's own).
	HelloDefaults bool
	// Pause and Stagger go to the load (loadgen.Config): a think time
	// between one client's requests, and the span over which the clients'
	// first requests are spread.
	Pause, Stagger time.Duration
	// Warmup is how long the load runs before the first upgrade (default
	// 500ms; set it to at least Stagger so every client is connected).
	Warmup time.Duration
	// CountTaken asks the serving generation's status before each upgrade
	// and at the end, for Upgrade.ConnsTaken.
	CountTaken bool
	// KeepLog, when set, is where hello's log (every generation's lines,
	// and baton run's) is copied at the end of the run.
	KeepLog string
}

// Upgrade is one measured upgrade.
type Upgrade struct {
	OldPID, NewPID int
	Switch         time.Duration // trigger -> first response from the new pid
	ReadyAfter     time.Duration // process start -> ready (baton's view)
	AppStartup     time.Duration // the app's own part of ReadyAfter
	OldExit        time.Duration // handover -> old process gone
	AfterLast      time.Duration // last response from the old pid -> old process gone
	// Handover as the run saw it: when `baton upgrade` returned, or (a
	// peer) when the new pid appeared in the PID file.
	Handover time.Time

	// From hello's log (zero for a peer, or when not logged): when the
	// old generation's drain started (its "handed over; draining" line,
	// millisecond precision), how long the drain took (its "drained"
	// line), how long after the drain start the process was gone, and how
	// many connections the drain passed to the next generation (-1: no
	// "drained" line).
	DrainStart time.Time
	DrainDone  time.Duration
	DrainExit  time.Duration
	Migrated   int
	// ConnsTaken: the new generation's status conns_taken just before the
	// next upgrade or the end (Config.CountTaken; -1 unknown).
	ConnsTaken int
}

// Overhead is the part of the switch time that is not the app's own
// start-up: exec, runtime start, handoff, the CLI round trip.
func (u Upgrade) Overhead() time.Duration { return u.Switch - u.AppStartup }

// Result is what a run measured.
type Result struct {
	Load     loadgen.Report
	Upgrades []Upgrade
	Failing  *proctest.UpgradeReport // the deliberately failing upgrade
	// FailingLost counts requests that failed while the failing upgrade ran.
	FailingLost int64
	// Supervisor (Supervised runs, Linux): its memory after the run and
	// the CPU it used while idle for IdleFor.
	Supervisor *SupervisorUsage
	// Peer runs: upgrade triggers (SIGHUPs) sent, how many the peer
	// refused, and why the first one was refused.
	Triggers, Refused int
	RefusedWhy        string
}

// SupervisorUsage is the supervisor's footprint at idle.
type SupervisorUsage struct {
	PID     int
	RSSKiB  int64
	IdleCPU time.Duration
	IdleFor time.Duration
}

// Run builds the binaries into a temporary directory and runs the scenario.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	say := func(format string, a ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, format+"\n", a...)
		}
	}
	if cfg.Peer != "" {
		return runPeer(ctx, cfg, say)
	}
	root, err := proctest.ModuleRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "baton-scn")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	os.Setenv(contract.EnvRuntimeDir, filepath.Join(dir, "run"))
	say("building examples/hello and cmd/baton ...")
	bins, err := proctest.Build(root, dir, map[string]string{
		"hello-v1": "./examples/hello", "hello-v2": "./examples/hello",
		"baton": "./cmd/baton", "crasher": "./test/e2e/testdata/badapp",
	}, map[string][]string{
		"hello-v1": {"-ldflags", "-X main.buildVersion=v1"},
		"hello-v2": {"-ldflags", "-X main.buildVersion=v2"},
		"crasher":  {"-ldflags", "-X main.mode=exit"},
	})
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}

	tracker := proctest.NewTracker()
	defer tracker.Close()
	logf, err := os.Create(filepath.Join(dir, "hello.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	installed := filepath.Join(dir, "installed-hello")
	if err := copyFile(bins["hello-v1"], installed); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	helloArgs := []string{"-addr", addr,
		"-idle-grace", cfg.IdleGrace.String(), "-drain-timeout", cfg.DrainTimeout.String(),
		"-startup-delay", cfg.StartupDelay.String(), "-ready-timeout", "10s"}
	runArgs := []string{"run", "--name", "scenario", "--listen", "tcp://" + addr,
		"--drain-timeout", (cfg.DrainTimeout + time.Second).String(), "--ready-timeout", "10s"}
	if cfg.HelloDefaults {
		helloArgs = []string{"-addr", addr}
		runArgs = []string{"run", "--name", "scenario", "--listen", "tcp://" + addr}
	}
	drainWait := cfg.DrainTimeout
	if drainWait <= 0 {
		drainWait = 30 * time.Second
	}
	var svc *proctest.Service
	if cfg.Supervised {
		svc, err = proctest.Start(sctx, tracker, bins["baton"], "scenario", os.Environ(), logf, bins["baton"],
			append(append(runArgs, "--", installed), helloArgs...)...)
	} else {
		svc, err = proctest.Start(sctx, tracker, bins["baton"], "scenario", os.Environ(), logf, installed,
			append([]string{"-name", "scenario"}, helloArgs...)...)
	}
	cancel()
	if err != nil {
		return nil, err
	}
	defer func() {
		if cfg.Supervised {
			svc.Cmd.Process.Signal(os.Interrupt) // the supervisor drains its generations
		} else if st, err := svc.Status(context.Background()); err == nil {
			if p, err := os.FindProcess(st.PID); err == nil {
				p.Signal(os.Interrupt)
			}
		}
		reapAll(tracker, drainWait+5*time.Second)
	}()
	st, err := svc.Status(ctx)
	if err != nil {
		return nil, err
	}
	tracker.Track(st.PID) // under `baton run` a child of the supervisor, not ours
	say("hello serving on http://%s (pid %d)", addr, st.PID)

	load, err := startLoad(ctx, addr, cfg)
	if err != nil {
		return nil, err
	}
	defer load.Stop()
	warmup(cfg)

	res := &Result{}
	var ups []pending
	current := st.PID
	// taken records the serving generation's conns_taken in the last
	// upgrade (Config.CountTaken).
	taken := func() {
		if !cfg.CountTaken || len(ups) == 0 {
			return
		}
		ups[len(ups)-1].up.ConnsTaken = -1
		if st, err := svc.Status(ctx); err == nil && st.PID == current {
			ups[len(ups)-1].up.ConnsTaken = st.ConnsTaken
		}
	}
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for i := 0; i < cfg.Upgrades; i++ {
		<-tick.C
		taken() // the previous upgrade's: its old generation had an interval to pass them
		// Alternate releases: each upgrade starts what is on disk now.
		version := []string{"v2", "v1"}[i%2]
		if err := copyFile(bins["hello-"+version], installed); err != nil {
			return nil, err
		}
		rep, err := svc.Upgrade(ctx)
		if err != nil {
			return nil, err
		}
		if !rep.OK {
			return nil, fmt.Errorf("upgrade %d failed (exit %d): %s %s", i+1, rep.ExitCode, rep.Code, rep.Error)
		}
		seen, err := load.WaitPID(ctx, rep.Result.PID)
		if err != nil {
			return nil, err
		}
		u := Upgrade{OldPID: current, NewPID: rep.Result.PID, Switch: seen.Sub(rep.Triggered),
			ReadyAfter: rep.Result.ReadyAfter, AppStartup: rep.Result.AppStartup}
		say("upgrade %2d: install %s, pid %d -> %d, first response from the new pid after %v", i+1, version, current, u.NewPID, u.Switch.Round(100*time.Microsecond))
		ups = append(ups, pending{up: u, handover: rep.Returned})
		current = rep.Result.PID
	}
	if cfg.FailingLast {
		<-tick.C
		before := load.Snapshot().TotalFailed()
		if err := copyFile(installed, installed+".good"); err != nil {
			return nil, err
		}
		if err := copyFile(bins["crasher"], installed); err != nil {
			return nil, err
		}
		say("installing a broken release (it exits 3 at start-up) and upgrading to it ...")
		rep, err := svc.Upgrade(ctx)
		if err != nil {
			return nil, err
		}
		if err := copyFile(installed+".good", installed); err != nil {
			return nil, err
		}
		res.Failing = &rep
		time.Sleep(cfg.Interval)
		res.FailingLost = load.Snapshot().TotalFailed() - before
		st, _ := svc.Status(ctx)
		say("failed upgrade: exit code %d, code %q; pid %d still serving (%s)", rep.ExitCode, rep.Code, st.PID, st.Phase)
	}
	time.Sleep(cfg.Interval)
	taken()
	res.Load = load.Stop()
	if res.Upgrades, err = settle(ctx, tracker, load, ups, drainWait+5*time.Second); err != nil {
		return nil, err
	}
	if err := drainLog(filepath.Join(dir, "hello.log"), res.Upgrades, tracker); err != nil {
		return nil, err
	}
	if cfg.KeepLog != "" {
		if err := copyFile(filepath.Join(dir, "hello.log"), cfg.KeepLog); err != nil {
			return nil, err
		}
	}
	if cfg.Supervised {
		idle := cfg.IdleFor
		if idle <= 0 {
			idle = 5 * time.Second
		}
		pid := svc.Cmd.Process.Pid
		say("measuring the supervisor (pid %d) idle for %v ...", pid, idle)
		before, err := proctest.ReadUsage(pid)
		if err == nil {
			time.Sleep(idle)
			var after proctest.Usage
			if after, err = proctest.ReadUsage(pid); err == nil {
				res.Supervisor = &SupervisorUsage{PID: pid, RSSKiB: after.RSSKiB, IdleCPU: after.CPU - before.CPU, IdleFor: idle}
			}
		}
		if err != nil {
			say("supervisor usage not measured: %v", err)
		}
	}
	return res, nil
}

func copyFile(src, dst string) error { return proctest.InstallCopy(src, dst) }

// Stats summarises durations.
type Stats struct{ Min, Median, P90, Max time.Duration }

// Summarize computes Stats of f over the upgrades.
func Summarize(ups []Upgrade, f func(Upgrade) time.Duration) Stats {
	if len(ups) == 0 {
		return Stats{}
	}
	ds := make([]time.Duration, len(ups))
	for i, u := range ups {
		ds[i] = f(u)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return Stats{Min: ds[0], Median: ds[len(ds)/2], P90: ds[len(ds)*9/10], Max: ds[len(ds)-1]}
}

func (s Stats) String() string {
	r := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
	return fmt.Sprintf("median %-8s p90 %-8s max %-8s", r(s.Median), r(s.P90), r(s.Max))
}

func freeAddr() (string, error) { return proctest.FreeAddr("tcp") }

// reapAll waits (bounded) for every tracked process to exit and kills the
// ones that do not: nothing outlives a run.
func reapAll(tracker *proctest.Tracker, wait time.Duration) {
	wctx, wcancel := context.WithTimeout(context.Background(), wait)
	defer wcancel()
	for _, pid := range tracker.Live() {
		if _, err := tracker.WaitExit(wctx, pid); err != nil {
			if p, err := os.FindProcess(pid); err == nil {
				p.Kill()
			}
		}
	}
}

// pending is an upgrade whose old generation may still drain.
type pending struct {
	up       Upgrade
	handover time.Time
}

// settle waits until each upgrade's old generation has exited and fills
// in when, relative to the handover and to its last response.
func settle(ctx context.Context, tracker *proctest.Tracker, load *loadgen.Load, ups []pending, wait time.Duration) ([]Upgrade, error) {
	var out []Upgrade
	for _, p := range ups {
		wctx, wcancel := context.WithTimeout(ctx, wait)
		ex, err := tracker.WaitExit(wctx, p.up.OldPID)
		wcancel()
		if err != nil {
			return nil, fmt.Errorf("old generation %d did not exit: %w", p.up.OldPID, err)
		}
		p.up.OldExit = ex.At.Sub(p.handover)
		p.up.Handover = p.handover
		if last, ok := load.LastSeen(p.up.OldPID); ok {
			p.up.AfterLast = ex.At.Sub(last)
		}
		out = append(out, p.up)
	}
	return out, nil
}
