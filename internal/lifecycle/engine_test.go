package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/contract"
)

// The engine is driven here with a fake platform: no process is started.
// Each fake process does what its test scripts for it; the tests wait for
// observable events (channels), never for time to pass, except where a
// timeout is the thing under test.

type fakeProc struct {
	pid     int
	binary  string
	req     StartRequest
	ready   chan struct{} // closed: it says ready
	exited  chan struct{}
	drained chan struct{} // closed when told to drain

	mu          sync.Mutex
	err         error
	commitErr   error
	exitOnDrain bool
	aborted     bool
	killed      bool
	released    bool
	readyOnce   sync.Once
	exitOnce    sync.Once
	drainOnce   sync.Once
}

func (p *fakeProc) PID() int       { return p.pid }
func (p *fakeProc) Binary() string { return p.binary }
func (p *fakeProc) WaitReady(ctx context.Context) (ReadyInfo, error) {
	select {
	case <-p.ready:
		tick()
		return ReadyInfo{AppStartup: time.Millisecond}, nil
	case <-p.exited:
		return ReadyInfo{}, p.Err()
	case <-ctx.Done():
		return ReadyInfo{}, ctx.Err()
	}
}
func (p *fakeProc) Commit() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.commitErr
}
func (p *fakeProc) Abort(string) {
	p.mu.Lock()
	p.aborted = true
	p.mu.Unlock()
	p.exit(errors.New("killed"))
}
func (p *fakeProc) Drain() {
	p.drainOnce.Do(func() { close(p.drained) })
	p.mu.Lock()
	exit := p.exitOnDrain
	p.mu.Unlock()
	if exit {
		tick()
		p.exit(nil)
	}
}

// tick returns once the clock has moved, so that a step of the fake takes
// a measurable time (Wine's clock can be coarser than a fake's step).
func tick() {
	for t0 := time.Now(); !time.Now().After(t0); {
		runtime.Gosched()
	}
}
func (p *fakeProc) Kill() {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	p.exit(errors.New("killed"))
}
func (p *fakeProc) Exited() <-chan struct{} { return p.exited }
func (p *fakeProc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}
func (p *fakeProc) Release() {
	p.mu.Lock()
	p.released = true
	p.mu.Unlock()
}

func (p *fakeProc) sayReady() { p.readyOnce.Do(func() { close(p.ready) }) }
func (p *fakeProc) exit(err error) {
	p.exitOnce.Do(func() {
		p.mu.Lock()
		if err == nil {
			err = fmt.Errorf("%w: pid %d exited", contract.ErrChildExited, p.pid)
		}
		p.err = err
		p.mu.Unlock()
		close(p.exited)
	})
}
func (p *fakeProc) crash() { p.exit(fmt.Errorf("%w: pid %d crashed", contract.ErrChildExited, p.pid)) }
func (p *fakeProc) was() (aborted, killed, released bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.aborted, p.killed, p.released
}

// fakePlatform starts fake processes; script decides how each behaves
// (default: ready at once, exits when told to drain).
type fakePlatform struct {
	mu       sync.Mutex
	procs    []*fakeProc
	started  chan *fakeProc
	script   func(*fakeProc) error // returns a start error, or configures p
	healthy  func(Proc) bool       // nil: not a Prober
	nextPID  int
	probeCnt int
}

func newFake() *fakePlatform { return &fakePlatform{started: make(chan *fakeProc, 64), nextPID: 100} }

func (f *fakePlatform) Start(ctx context.Context, req StartRequest) (Proc, error) {
	f.mu.Lock()
	f.nextPID++
	p := &fakeProc{pid: f.nextPID, binary: "app", req: req, ready: make(chan struct{}), exited: make(chan struct{}), drained: make(chan struct{}), exitOnDrain: true}
	if req.RunAgain != nil {
		p.binary = req.RunAgain.Binary()
	}
	script := f.script
	f.mu.Unlock()
	if script != nil {
		if err := script(p); err != nil {
			return nil, err
		}
	} else {
		p.sayReady()
	}
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	f.started <- p
	return p, nil
}

func (f *fakePlatform) setScript(s func(*fakeProc) error) {
	f.mu.Lock()
	f.script = s
	f.mu.Unlock()
}

type probingPlatform struct{ *fakePlatform }

func (f probingPlatform) Healthy(ctx context.Context, p Proc) bool { return f.healthy(p) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// running starts an engine's Run in the background and waits for the
// first generation; stop stops it and returns Run's error.
func running(t *testing.T, plat Platform, f *fakePlatform, cfg Config) (e *Engine, first *fakeProc, stop func() error) {
	t.Helper()
	cfg.Logger = quiet()
	e = New(plat, cfg)
	done := make(chan error, 1)
	go func() { done <- e.Run(context.Background()) }()
	first = <-f.started
	waitFor(t, "first generation serving", func() bool {
		if e.Snapshot().Phase != PhaseServing || !e.opMu.TryLock() {
			return false
		}
		e.opMu.Unlock()
		return true
	})
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			e.Halt()
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after a stop")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return e, first, stop
}

// waitFor polls a condition the engine reaches asynchronously (bounded).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestTransitionTable(t *testing.T) {
	valid := map[[2]int]State{
		{int(Starting), int(EvReady)}:  Ready,
		{int(Starting), int(EvCommit)}: Serving,
		{int(Ready), int(EvCommit)}:    Serving,
		{int(Starting), int(EvFail)}:   Failed,
		{int(Starting), int(EvExit)}:   Failed,
		{int(Ready), int(EvFail)}:      Failed,
		{int(Ready), int(EvExit)}:      Failed,
		{int(Serving), int(EvDrain)}:   Draining,
		{int(Serving), int(EvExit)}:    Exited,
		{int(Draining), int(EvExit)}:   Exited,
		{int(Draining), int(EvDrain)}:  Draining,
		{int(Exited), int(EvExit)}:     Exited,
		{int(Exited), int(EvFail)}:     Exited,
		{int(Exited), int(EvDrain)}:    Exited,
		{int(Failed), int(EvExit)}:     Failed,
		{int(Failed), int(EvFail)}:     Failed,
		{int(Failed), int(EvDrain)}:    Failed,
	}
	for s := Starting; s <= Failed; s++ {
		for ev := EvReady; ev <= EvFail; ev++ {
			got, err := Transition(s, ev)
			want, ok := valid[[2]int{int(s), int(ev)}]
			switch {
			case ok && (err != nil || got != want):
				t.Errorf("%s --%s--> %s, %v; want %s", s, ev, got, err, want)
			case !ok && err == nil:
				t.Errorf("%s --%s--> %s accepted; want an error", s, ev, got)
			case !ok && got != s:
				t.Errorf("%s --%s--> refused but moved to %s", s, ev, got)
			}
		}
	}
	if Starting.Final() || !Exited.Final() || !Failed.Final() || Serving.String() != "serving" {
		t.Fatal("state helpers")
	}
}

func TestUpgradeSwitchesAndDrains(t *testing.T) {
	f := newFake()
	e, first, _ := running(t, f, f, Config{})
	res, err := e.Upgrade(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	second := <-f.started
	if res.PID != second.pid || res.N != 2 || res.AppStartup != time.Millisecond || second.req.Serving != first || second.req.Reason != ReasonUpgrade || second.req.RunAgain != nil {
		t.Fatalf("result %+v, request %+v", res, second.req)
	}
	<-first.drained
	<-first.exited
	waitFor(t, "old generation exited", func() bool {
		s := e.Snapshot()
		return len(s.Draining) == 0 && s.Previous != nil && s.Previous.State == Exited
	})
	s := e.Snapshot()
	if s.Current.PID != second.pid || s.Current.State != Serving || s.Previous.PID != first.pid || s.Previous.State != Exited {
		t.Fatalf("snapshot %+v current %+v previous %+v", s, s.Current, s.Previous)
	}
	if s.Last == nil || s.Last.Op != OpUpgrade || s.Last.Err != nil || s.Last.Result.PID != second.pid {
		t.Fatalf("last outcome %+v", s.Last)
	}
}

func TestUpgradeFailuresKeepTheServingGeneration(t *testing.T) {
	cases := []struct {
		name   string
		script func(*fakeProc) error
		want   error
	}{
		{"exits before ready", func(p *fakeProc) error { p.crash(); return nil }, contract.ErrChildExited},
		{"never ready", func(p *fakeProc) error { return nil }, contract.ErrReadyTimeout},
		{"binary missing", func(p *fakeProc) error { return fmt.Errorf("%w: no such file", contract.ErrBinary) }, contract.ErrBinary},
		{"go-ahead not delivered", func(p *fakeProc) error { p.sayReady(); p.commitErr = io.ErrClosedPipe; return nil }, contract.ErrRefused},
		{"ready then dies before the commit", func(p *fakeProc) error { p.sayReady(); p.crash(); return nil }, contract.ErrChildExited},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFake()
			e, first, _ := running(t, f, f, Config{ReadyTimeout: 50 * time.Millisecond})
			f.setScript(c.script)
			_, err := e.Upgrade(context.Background())
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
			if cur := e.Current(); cur.Proc != first || cur.State() != Serving {
				t.Fatalf("current is %v (%s), want the first generation serving", cur.Proc.PID(), cur.State())
			}
			select {
			case <-first.drained:
				t.Fatal("the serving generation was told to drain")
			default:
			}
			f.mu.Lock()
			procs := append([]*fakeProc(nil), f.procs...)
			f.mu.Unlock()
			if len(procs) == 2 {
				if aborted, _, _ := procs[1].was(); !aborted {
					t.Fatal("the failed generation was not aborted")
				}
			}
			if s := e.Snapshot(); s.Phase != PhaseServing || s.Last == nil || !errors.Is(s.Last.Err, c.want) {
				t.Fatalf("snapshot after failure: %+v", s)
			}
		})
	}
}

func TestConcurrentUpgradeIsBusy(t *testing.T) {
	f := newFake()
	e, _, _ := running(t, f, f, Config{})
	f.setScript(func(p *fakeProc) error { return nil }) // waits to be told ready
	errc := make(chan error, 1)
	go func() { _, err := e.Upgrade(context.Background()); errc <- err }()
	second := <-f.started
	if _, err := e.Upgrade(context.Background()); !errors.Is(err, contract.ErrBusy) {
		t.Fatalf("second upgrade: %v, want ErrBusy", err)
	}
	if _, err := e.Rollback(context.Background()); !errors.Is(err, contract.ErrBusy) {
		t.Fatalf("rollback during an upgrade: %v, want ErrBusy", err)
	}
	// The fake says it started from inside Start; the engine records the
	// generation as starting once Start has returned.
	waitFor(t, "the new generation in the snapshot", func() bool { return e.Snapshot().Starting != nil })
	if s := e.Snapshot(); s.Phase != PhaseUpgrading || s.Starting == nil || s.Starting.PID != second.pid {
		t.Fatalf("snapshot during the upgrade: %+v", s)
	}
	second.sayReady()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestStopDuringUpgradeCancelsIt(t *testing.T) {
	f := newFake()
	e, first, stop := running(t, f, f, Config{})
	f.setScript(func(p *fakeProc) error { return nil })
	errc := make(chan error, 1)
	go func() { _, err := e.Upgrade(context.Background()); errc <- err }()
	second := <-f.started
	if err := stop(); err != nil {
		t.Fatalf("Run after a stop: %v", err)
	}
	if err := <-errc; !errors.Is(err, contract.ErrCanceled) {
		t.Fatalf("upgrade: %v, want ErrCanceled", err)
	}
	if aborted, _, _ := second.was(); !aborted {
		t.Fatal("the half-started generation was not aborted")
	}
	<-first.exited // drained by the stop
	if s := e.Snapshot(); s.Phase != PhaseStopped {
		t.Fatalf("phase %s", s.Phase)
	}
	if _, err := e.Upgrade(context.Background()); !errors.Is(err, contract.ErrStopped) {
		t.Fatalf("upgrade after stop: %v", err)
	}
}

func TestStopBetweenReadyAndCommit(t *testing.T) {
	f := newFake()
	e, _, _ := running(t, f, f, Config{})
	// Commit is where the decision is taken: a stop that arrived first
	// wins, and the ready generation is killed instead of taking over.
	var second *fakeProc
	f.setScript(func(p *fakeProc) error {
		second = p
		p.sayReady()
		e.Halt()
		return nil
	})
	_, err := e.Upgrade(context.Background())
	if !errors.Is(err, contract.ErrCanceled) {
		t.Fatalf("upgrade: %v", err)
	}
	if aborted, _, _ := second.was(); !aborted || e.Current().Proc == second {
		t.Fatal("a generation that got ready during a stop took over")
	}
}

func TestTooManyDrainingAndDrainDeadline(t *testing.T) {
	f := newFake()
	e, first, _ := running(t, f, f, Config{MaxDraining: 1, DrainTimeout: 200 * time.Millisecond})
	first.mu.Lock()
	first.exitOnDrain = false // a long request keeps it
	first.mu.Unlock()
	if _, err := e.Upgrade(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Upgrade(context.Background()); !errors.Is(err, contract.ErrTooManyDraining) {
		t.Fatalf("upgrade with one generation draining (max 1): %v", err)
	}
	<-first.exited // killed at the drain deadline
	if _, killed, _ := first.was(); !killed {
		t.Fatal("not killed at the drain deadline")
	}
	waitFor(t, "drained", func() bool { return len(e.Snapshot().Draining) == 0 })
	if _, err := e.Upgrade(context.Background()); err != nil {
		t.Fatalf("upgrade once it is gone: %v", err)
	}
}

func TestProbationExitRollsBack(t *testing.T) {
	f := newFake()
	e, first, _ := running(t, f, f, Config{Probation: time.Minute})
	f.setScript(func(p *fakeProc) error {
		p.sayReady()
		if p.req.Reason == ReasonUpgrade {
			go func() { <-first.drained; p.crash() }() // dies right after the switch
		}
		return nil
	})
	_, err := e.Upgrade(context.Background())
	if !errors.Is(err, contract.ErrRolledBack) {
		t.Fatalf("upgrade: %v, want ErrRolledBack", err)
	}
	bad := <-f.started
	back := <-f.started
	if back.req.Reason != ReasonRollback || back.req.RunAgain != first || back.req.Serving != bad {
		t.Fatalf("rollback request %+v", back.req)
	}
	s := e.Snapshot()
	if s.Current.PID != back.pid || s.Previous != nil || s.Phase != PhaseServing {
		t.Fatalf("after rollback: %+v", s)
	}
	if _, _, released := bad.was(); !released {
		t.Fatal("the failed generation's binary copy was kept")
	}
	if s.Last == nil || !errors.Is(s.Last.Err, contract.ErrRolledBack) {
		t.Fatalf("last outcome %+v", s.Last)
	}
}

// A generation that exits on probation was ready: the error says how it
// ended, not "exited before it was ready", and keeps its ExitError.
func TestProbationExitMessage(t *testing.T) {
	f := newFake()
	e, first, _ := running(t, f, f, Config{Probation: time.Minute})
	f.setScript(func(p *fakeProc) error {
		p.sayReady()
		if p.req.Reason == ReasonUpgrade {
			go func() { <-first.drained; p.exit(&contract.ExitError{PID: p.pid, ExitCode: 2}) }()
		}
		return nil
	})
	_, err := e.Upgrade(context.Background())
	var ee *contract.ExitError
	if !errors.Is(err, contract.ErrRolledBack) || !errors.As(err, &ee) || ee.ExitCode != 2 ||
		strings.Contains(err.Error(), "before it was ready") || !strings.Contains(err.Error(), "exited (exit code 2)") {
		t.Fatalf("upgrade: %v", err)
	}
}

// A generation that exits on probation is the probation's to roll back,
// not a crash: with restarts off (MaxRestarts < 0) the engine must not
// give up, and no crash is counted.
func TestProbationExitIsNoCrash(t *testing.T) {
	f := newFake()
	e, first, stop := running(t, f, f, Config{Probation: time.Minute, MaxRestarts: -1})
	f.setScript(func(p *fakeProc) error {
		p.sayReady()
		if p.req.Reason == ReasonUpgrade {
			go func() { <-first.drained; p.crash() }()
		}
		return nil
	})
	if _, err := e.Upgrade(context.Background()); !errors.Is(err, contract.ErrRolledBack) {
		t.Fatalf("upgrade: %v, want ErrRolledBack", err)
	}
	<-f.started // the one that exits
	back := <-f.started
	waitFor(t, "the rolled-back generation serving", func() bool {
		s := e.Snapshot()
		return s.Current != nil && s.Current.PID == back.pid && s.Phase == PhaseServing
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v, want nil (a stop), not a give-up", err)
	}
}

func TestProbationHealthFailureRollsBack(t *testing.T) {
	f := newFake()
	var badPID int
	var mu sync.Mutex
	f.healthy = func(p Proc) bool {
		mu.Lock()
		defer mu.Unlock()
		return p.PID() != badPID
	}
	plat := probingPlatform{f}
	e, _, _ := running(t, plat, f, Config{Probation: time.Minute, ProbeInterval: time.Millisecond})
	f.setScript(func(p *fakeProc) error {
		if p.req.Reason == ReasonUpgrade {
			mu.Lock()
			badPID = p.pid
			mu.Unlock()
		}
		p.sayReady()
		return nil
	})
	if _, err := e.Upgrade(context.Background()); !errors.Is(err, contract.ErrRolledBack) {
		t.Fatalf("upgrade: %v", err)
	}
	if e.Current().Proc.PID() == badPID {
		t.Fatal("the unhealthy generation still serves")
	}
}

func TestProbationPassesThenRollbackOnDemand(t *testing.T) {
	f := newFake()
	e, first, _ := running(t, f, f, Config{Probation: 20 * time.Millisecond})
	if _, err := e.Upgrade(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := <-f.started
	res, err := e.Rollback(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	third := <-f.started
	if res.PID != third.pid || third.req.RunAgain != first || third.req.Serving != second || third.binary != first.binary {
		t.Fatalf("rollback: %+v request %+v", res, third.req)
	}
	<-second.drained
	if s := e.Snapshot(); s.Previous.PID != second.pid || s.Last.Op != OpRollback {
		t.Fatalf("after rollback: %+v", s)
	}
}

func TestRollbackDuringProbation(t *testing.T) {
	f := newFake()
	e, first, _ := running(t, f, f, Config{Probation: time.Minute})
	upgraded := make(chan error, 1)
	go func() { _, err := e.Upgrade(context.Background()); upgraded <- err }()
	second := <-f.started
	waitFor(t, "probation", func() bool { return e.Snapshot().Phase == PhaseProbation })
	res, err := e.Rollback(context.Background())
	if err != nil {
		t.Fatalf("rollback during probation: %v", err)
	}
	third := <-f.started
	if res.PID != third.pid || third.req.RunAgain != first || third.req.Serving != second {
		t.Fatalf("rollback %+v request %+v", res, third.req)
	}
	if err := <-upgraded; !errors.Is(err, contract.ErrRolledBack) {
		t.Fatalf("the upgrade on probation: %v", err)
	}
}

func TestRollbackWithoutPrevious(t *testing.T) {
	f := newFake()
	e, _, _ := running(t, f, f, Config{})
	if _, err := e.Rollback(context.Background()); !errors.Is(err, contract.ErrNoPrevious) {
		t.Fatalf("rollback: %v", err)
	}
}

func TestRollbackRetriedWithoutState(t *testing.T) {
	f := newFake()
	e, _, _ := running(t, f, f, Config{})
	if _, err := e.Upgrade(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-f.started
	f.setScript(func(p *fakeProc) error {
		if !p.req.WithoutState {
			p.exit(fmt.Errorf("%w: refused the state", contract.ErrStateCorrupt))
			return nil
		}
		p.sayReady()
		return nil
	})
	if _, err := e.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	refused, again := <-f.started, <-f.started
	if refused.req.WithoutState || !again.req.WithoutState || e.Current().Proc != again {
		t.Fatal("the rollback was not retried without the state")
	}
}

func TestCrashIsRestartedWithItsBinary(t *testing.T) {
	f := newFake()
	e, first, _ := running(t, f, f, Config{RestartMin: time.Millisecond})
	first.crash()
	second := <-f.started
	if second.req.Reason != ReasonRestart || second.req.RunAgain != first || second.req.Serving != nil {
		t.Fatalf("restart request %+v", second.req)
	}
	waitFor(t, "restarted generation serving", func() bool {
		s := e.Snapshot()
		return s.Current.PID == second.pid && s.Phase == PhaseServing
	})
	if s := e.Snapshot(); s.Restarts != 1 {
		t.Fatalf("restarts %d", s.Restarts)
	}
}

func TestCrashLoopGivesUp(t *testing.T) {
	f2 := newFake()
	e2 := New(f2, Config{RestartMin: time.Millisecond, MaxRestarts: 2, Logger: quiet()})
	f2.setScript(func(p *fakeProc) error { p.crash(); return nil })
	runErr := e2.Run(context.Background())
	if !errors.Is(runErr, contract.ErrGaveUp) {
		t.Fatalf("Run: %v, want ErrGaveUp", runErr)
	}
	f2.mu.Lock()
	n := len(f2.procs)
	f2.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d starts, want 2 (MaxRestarts)", n)
	}
}

func TestNoRestartsMeansGiveUpAtFirstCrash(t *testing.T) {
	f := newFake()
	e := New(f, Config{MaxRestarts: -1, Logger: quiet()})
	done := make(chan error, 1)
	go func() { done <- e.Run(context.Background()) }()
	first := <-f.started
	waitFor(t, "serving", func() bool { return e.Snapshot().Phase == PhaseServing })
	first.crash()
	if err := <-done; !errors.Is(err, contract.ErrGaveUp) {
		t.Fatalf("Run: %v", err)
	}
	if len(f.procs) != 1 {
		t.Fatal("restarted although restarts are off")
	}
}

func TestStopDuringBackOff(t *testing.T) {
	f := newFake()
	e, first, stop := running(t, f, f, Config{RestartMin: time.Hour})
	first.crash()
	waitFor(t, "restarting", func() bool { return e.Snapshot().Phase == PhaseRestarting })
	if err := stop(); err != nil {
		t.Fatalf("a stop during the back-off: %v", err)
	}
}

func TestLibraryAdoptsItself(t *testing.T) {
	f := newFake()
	self := &fakeProc{pid: 1, binary: "app", ready: make(chan struct{}), exited: make(chan struct{}), drained: make(chan struct{})}
	e := New(f, Config{Logger: quiet(), ExternalDraining: func() int { return 0 }})
	g := e.Adopt(self, 3)
	if _, err := e.Upgrade(context.Background()); !errors.Is(err, contract.ErrNotReady) {
		t.Fatalf("upgrade before ready: %v", err)
	}
	e.MarkServing(g)
	if e.HandingOver(g) {
		t.Fatal("handing over before any upgrade")
	}
	res, err := e.Upgrade(context.Background())
	if err != nil || res.N != 4 {
		t.Fatalf("upgrade: %+v %v", res, err)
	}
	<-self.drained
	if !e.HandingOver(g) || g.State() != Draining {
		t.Fatalf("after the upgrade: handing over %v, state %s", e.HandingOver(g), g.State())
	}
	self.exit(nil) // the app drained and stopped
	waitFor(t, "self exited", func() bool { return g.State() == Exited })
}

func TestFailedStartIsReleased(t *testing.T) {
	f := newFake()
	e, _, _ := running(t, f, f, Config{})
	f.setScript(func(p *fakeProc) error { p.crash(); return nil })
	if _, err := e.Upgrade(context.Background()); err == nil {
		t.Fatal("upgrade to a crashing release succeeded")
	}
	f.mu.Lock()
	bad := f.procs[len(f.procs)-1]
	f.mu.Unlock()
	if _, _, released := bad.was(); !released {
		t.Fatal("the saved binary of a failed start was kept")
	}
}

func TestRollbackAskedAsProbationPassesStillRollsBack(t *testing.T) {
	f := newFake()
	e, first, _ := running(t, f, f, Config{Probation: time.Millisecond})
	// The probation may pass before the request is seen: the rollback
	// must happen all the same, not report success with nothing done.
	if _, err := e.Upgrade(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-f.started
	res, err := e.Rollback(context.Background())
	if err != nil || res.PID == 0 {
		t.Fatalf("rollback: %+v %v", res, err)
	}
	back := <-f.started
	if back.req.RunAgain != first || res.PID != back.pid {
		t.Fatalf("rollback ran %+v, result %+v", back.req, res)
	}
}

func TestRejectedGenerationIsNotRestarted(t *testing.T) {
	f := newFake()
	e, first, _ := running(t, f, f, Config{Probation: time.Minute, ReadyTimeout: 100 * time.Millisecond, RestartMin: time.Millisecond})
	var bad *fakeProc
	f.setScript(func(p *fakeProc) error {
		switch p.req.Reason {
		case ReasonUpgrade:
			bad = p
			p.sayReady()
			go func() { <-first.drained; p.crash() }()
		case ReasonRollback:
			// the rollback fails too: never ready
		default:
			p.sayReady()
		}
		return nil
	})
	_, err := e.Upgrade(context.Background())
	if err == nil || errors.Is(err, contract.ErrRolledBack) {
		t.Fatalf("upgrade whose rollback failed: %v (must not say rolled back)", err)
	}
	var restarted *fakeProc
	for p := range f.started {
		if p.req.Reason == ReasonRestart {
			restarted = p
			break
		}
	}
	if restarted.req.RunAgain == bad || restarted.req.RunAgain != first {
		t.Fatalf("the crash restart runs %v, want the first generation's binary", restarted.req.RunAgain)
	}
}

func TestUpgradeWithUndoesOnFailure(t *testing.T) {
	f := newFake()
	e, _, _ := running(t, f, f, Config{})
	f.setScript(func(p *fakeProc) error { p.crash(); return nil })
	var undone error
	_, err := e.UpgradeWith(context.Background(), func() (func(error), error) {
		if _, err := e.Upgrade(context.Background()); !errors.Is(err, contract.ErrBusy) {
			t.Errorf("an upgrade during prepare: %v, want busy", err)
		}
		return func(err error) { undone = err }, nil
	})
	if !errors.Is(err, contract.ErrChildExited) || !errors.Is(undone, contract.ErrChildExited) {
		t.Fatalf("upgrade %v, undo called with %v", err, undone)
	}
	prepErr := errors.New("install failed")
	if _, err := e.UpgradeWith(context.Background(), func() (func(error), error) { return nil, prepErr }); !errors.Is(err, prepErr) {
		t.Fatalf("a failed prepare: %v", err)
	}
}

func TestGaveUpIsTheCode(t *testing.T) {
	f := newFake()
	e := New(f, Config{RestartMin: time.Millisecond, MaxRestarts: 2, Logger: quiet()})
	f.setScript(func(p *fakeProc) error { p.crash(); return nil })
	err := e.Run(context.Background())
	if contract.CodeOf(err) != contract.CodeGaveUp {
		t.Fatalf("Run: %v, code %s, want %s", err, contract.CodeOf(err), contract.CodeGaveUp)
	}
}
