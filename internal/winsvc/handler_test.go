package winsvc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/contract"
)

// fakeSup is a supervisor whose Run returns when stopped or when the test
// says so.
type fakeSup struct {
	serving  chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
	runErr   chan error // Run returns what arrives here (after a stop: nil)
	drain    time.Duration

	mu        sync.Mutex
	upgrades  int
	rollbacks int
	reopens   int
	upErr     error
	opRunning chan struct{} // closed when an upgrade runs (optional)
	opRelease chan struct{} // an upgrade waits for it (optional)
}

func newFake() *fakeSup {
	return &fakeSup{serving: make(chan struct{}), stopped: make(chan struct{}), runErr: make(chan error, 1)}
}

func (f *fakeSup) Run(ctx context.Context) error {
	select {
	case <-f.stopped:
		time.Sleep(f.drain)
		return nil
	case err := <-f.runErr:
		return err
	}
}
func (f *fakeSup) Serving() <-chan struct{} { return f.serving }
func (f *fakeSup) Stop()                    { f.stopOnce.Do(func() { close(f.stopped) }) }
func (f *fakeSup) Upgrade(ctx context.Context) (contract.UpgradeResult, error) {
	f.mu.Lock()
	f.upgrades++
	err, running, release := f.upErr, f.opRunning, f.opRelease
	f.mu.Unlock()
	if running != nil {
		close(running)
	}
	if release != nil {
		<-release
	}
	return contract.UpgradeResult{PID: 4242, ReadyAfter: 5 * time.Millisecond}, err
}
func (f *fakeSup) Rollback(ctx context.Context) (contract.UpgradeResult, error) {
	f.mu.Lock()
	f.rollbacks++
	f.mu.Unlock()
	return contract.UpgradeResult{PID: 4343}, nil
}
func (f *fakeSup) ReopenLog() error {
	f.mu.Lock()
	f.reopens++
	f.mu.Unlock()
	return nil
}

// recorder collects the reports.
type recorder struct {
	mu  sync.Mutex
	all []Status
	ch  chan Status
}

func newRecorder() *recorder { return &recorder{ch: make(chan Status, 1000)} }

func (r *recorder) report(s Status) {
	r.mu.Lock()
	r.all = append(r.all, s)
	r.mu.Unlock()
	r.ch <- s
}

func (r *recorder) states() []State {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []State
	for _, s := range r.all {
		if len(out) == 0 || out[len(out)-1] != s.State {
			out = append(out, s.State)
		}
	}
	return out
}

// waitState waits for a report of state s.
func (r *recorder) waitState(t *testing.T, s State) Status {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case got := <-r.ch:
			if got.State == s {
				return got
			}
		case <-timeout:
			t.Fatalf("no %s reported; states so far %v", s, r.states())
		}
	}
}

type session struct {
	h    *Handler
	rec  *recorder
	reqs chan Cmd
	logs *syncBuffer
	res  chan [2]uint32
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func start(t *testing.T, sup Supervisor, newErr error, tweak func(*Handler)) *session {
	s := &session{rec: newRecorder(), reqs: make(chan Cmd), logs: &syncBuffer{}, res: make(chan [2]uint32, 1)}
	s.h = &Handler{
		New: func() (Supervisor, error) {
			if newErr != nil {
				return nil, newErr
			}
			return sup, nil
		},
		Report:   s.rec.report,
		Log:      slog.New(slog.NewTextHandler(s.logs, nil)),
		WaitHint: 40 * time.Millisecond,
	}
	if tweak != nil {
		tweak(s.h)
	}
	go func() {
		specific, code := s.h.Execute(s.reqs)
		b := uint32(0)
		if specific {
			b = 1
		}
		s.res <- [2]uint32{b, code}
	}()
	return s
}

func (s *session) result(t *testing.T) (bool, uint32) {
	t.Helper()
	select {
	case r := <-s.res:
		return r[0] == 1, r[1]
	case <-time.After(5 * time.Second):
		t.Fatalf("Execute did not return; states %v", s.rec.states())
	}
	return false, 0
}

func (s *session) send(t *testing.T, c Cmd) {
	t.Helper()
	select {
	case s.reqs <- c:
	case <-time.After(5 * time.Second):
		t.Fatalf("the handler does not take control code %d", c)
	}
}

func TestStartPendingUntilServingThenRunningThenStop(t *testing.T) {
	f := newFake()
	f.drain = 100 * time.Millisecond
	s := start(t, f, nil, nil)
	first := s.rec.waitState(t, StartPending)
	if first.CheckPoint != 1 || first.WaitHint <= 0 || first.AcceptStop {
		t.Fatalf("first report %+v: want START_PENDING, checkpoint 1, a wait hint, accepting nothing", first)
	}
	// Checkpoints advance while the first generation is not ready.
	var last uint32
	for i := 0; i < 3; i++ {
		st := s.rec.waitState(t, StartPending)
		if st.CheckPoint <= last {
			t.Fatalf("checkpoint %d after %d: must increase", st.CheckPoint, last)
		}
		last = st.CheckPoint
	}
	s.send(t, CmdInterrogate)
	if st := s.rec.waitState(t, StartPending); st.CheckPoint != last {
		t.Fatalf("interrogate answered %+v, want the current status (checkpoint %d)", st, last)
	}
	close(f.serving)
	run := s.rec.waitState(t, Running)
	if !run.AcceptStop || run.CheckPoint != 0 || run.WaitHint != 0 {
		t.Fatalf("RUNNING report %+v: want accepting stop and shutdown, no checkpoint or hint", run)
	}
	s.send(t, CmdStop)
	sp := s.rec.waitState(t, StopPending)
	if sp.WaitHint <= 0 || sp.AcceptStop {
		t.Fatalf("STOP_PENDING report %+v: want a wait hint and accepting nothing", sp)
	}
	sp2 := s.rec.waitState(t, StopPending) // the drain takes 100ms: checkpoints advance
	if sp2.CheckPoint <= sp.CheckPoint {
		t.Fatalf("STOP_PENDING checkpoint %d after %d", sp2.CheckPoint, sp.CheckPoint)
	}
	s.rec.waitState(t, Stopped)
	if specific, code := s.result(t); specific || code != 0 {
		t.Fatalf("exit after a requested stop: specific=%v code %d, want 0", specific, code)
	}
	want := []State{StartPending, Running, StopPending, Stopped}
	if got := s.rec.states(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("states %v, want %v", got, want)
	}
}

// RUNNING stays through control codes (upgrades, rollbacks, log reopen):
// nothing but RUNNING is reported until the stop.
func TestRunningThroughControlCodes(t *testing.T) {
	f := newFake()
	close(f.serving)
	s := start(t, f, nil, nil)
	s.rec.waitState(t, Running)
	for _, c := range []Cmd{CmdUpgrade, CmdUpgrade, CmdRollback, CmdReopenLog, Cmd(200)} {
		s.send(t, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		u, r, o := f.upgrades, f.rollbacks, f.reopens
		f.mu.Unlock()
		if u == 2 && r == 1 && o == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upgrades %d rollbacks %d reopens %d, want 2 1 1", u, r, o)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.send(t, CmdInterrogate)
	s.rec.waitState(t, Running)
	s.send(t, CmdShutdown)
	s.rec.waitState(t, Stopped)
	if specific, code := s.result(t); specific || code != 0 {
		t.Fatalf("exit %v %d", specific, code)
	}
	if got, want := fmt.Sprint(s.rec.states()), fmt.Sprint([]State{StartPending, Running, StopPending, Stopped}); got != want {
		t.Fatalf("states %s, want %s", got, want)
	}
	logs := s.logs.String()
	for _, w := range []string{"control code 128: upgrade done", "pid=4242", "control code 129: rollback done", "control code 130: log file reopened", "unknown control code ignored", "code=200", "system shutdown"} {
		if !strings.Contains(logs, w) {
			t.Errorf("log lacks %q:\n%s", w, logs)
		}
	}
}

// A control code does not block the handler: an upgrade under way does
// not delay Interrogate or Stop.
func TestControlCodeDoesNotBlock(t *testing.T) {
	f := newFake()
	close(f.serving)
	f.opRunning, f.opRelease = make(chan struct{}), make(chan struct{})
	s := start(t, f, nil, nil)
	s.rec.waitState(t, Running)
	s.send(t, CmdUpgrade)
	<-f.opRunning
	s.send(t, CmdInterrogate)
	s.rec.waitState(t, Running)
	s.send(t, CmdStop)
	s.rec.waitState(t, StopPending)
	close(f.opRelease) // the supervisor calls the upgrade off at the stop
	s.rec.waitState(t, Stopped)
	s.result(t)
}

func TestFailedUpgradeLogged(t *testing.T) {
	f := newFake()
	close(f.serving)
	f.upErr = fmt.Errorf("new generation exited: %w", contract.ErrChildExited)
	s := start(t, f, nil, nil)
	s.rec.waitState(t, Running)
	s.send(t, CmdUpgrade)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.logs.String(), "control code 128: upgrade failed") {
		if time.Now().After(deadline) {
			t.Fatalf("no failure logged:\n%s", s.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(s.logs.String(), "level=ERROR") || !strings.Contains(s.logs.String(), "code=child_exited") {
		t.Errorf("failure not logged as an error with its code:\n%s", s.logs.String())
	}
	s.send(t, CmdStop)
	s.result(t)
}

// The app keeps failing: Run returns ErrGaveUp while RUNNING; STOPPED with
// a service-specific exit code (the recovery actions restart it).
func TestGaveUpStopsWithServiceSpecificCode(t *testing.T) {
	f := newFake()
	close(f.serving)
	s := start(t, f, nil, nil)
	s.rec.waitState(t, Running)
	f.runErr <- fmt.Errorf("supervisor: %w", contract.ErrGaveUp)
	s.rec.waitState(t, Stopped)
	specific, code := s.result(t)
	if !specific || code != uint32(contract.ExitFailed) {
		t.Fatalf("gave up: specific=%v code %d, want a service-specific %d", specific, code, contract.ExitFailed)
	}
	if got, want := fmt.Sprint(s.rec.states()), fmt.Sprint([]State{StartPending, Running, Stopped}); got != want {
		t.Fatalf("states %s, want %s", got, want)
	}
}

// The first generation never serves: Run fails during START_PENDING.
func TestFailsWhileStarting(t *testing.T) {
	f := newFake()
	s := start(t, f, nil, nil)
	s.rec.waitState(t, StartPending)
	f.runErr <- fmt.Errorf("first generation: %w", contract.ErrGaveUp)
	s.rec.waitState(t, Stopped)
	if specific, code := s.result(t); !specific || code == 0 {
		t.Fatalf("exit %v %d: want a service-specific code", specific, code)
	}
	for _, st := range s.rec.states() {
		if st == Running {
			t.Fatalf("RUNNING reported though nothing served: %v", s.rec.states())
		}
	}
}

func TestNewFails(t *testing.T) {
	s := start(t, nil, errors.New("listen tcp 127.0.0.1:8080: address in use"), nil)
	s.rec.waitState(t, Stopped)
	if specific, code := s.result(t); !specific || code != ExitStartFailed {
		t.Fatalf("exit %v %d, want service-specific %d", specific, code, ExitStartFailed)
	}
	if !strings.Contains(s.logs.String(), "address in use") {
		t.Errorf("the reason is not logged:\n%s", s.logs.String())
	}
}

// baton stop through the named pipe: Run returns nil while RUNNING.
func TestStopThroughThePipe(t *testing.T) {
	f := newFake()
	close(f.serving)
	s := start(t, f, nil, nil)
	s.rec.waitState(t, Running)
	f.runErr <- nil
	s.rec.waitState(t, Stopped)
	if specific, code := s.result(t); specific || code != 0 {
		t.Fatalf("exit %v %d, want 0", specific, code)
	}
}

// A stop while starting drains at once.
func TestStopWhileStarting(t *testing.T) {
	f := newFake()
	s := start(t, f, nil, nil)
	s.rec.waitState(t, StartPending)
	s.send(t, CmdUpgrade) // ignored while starting
	s.send(t, CmdStop)
	s.rec.waitState(t, StopPending)
	s.rec.waitState(t, Stopped)
	if specific, code := s.result(t); specific || code != 0 {
		t.Fatalf("exit %v %d", specific, code)
	}
	if f.upgrades != 0 {
		t.Fatalf("an upgrade ran while starting")
	}
}

// A shutdown that outlasts the budget: STOPPED with ExitDrainCut.
func TestShutdownBudget(t *testing.T) {
	f := newFake()
	close(f.serving)
	f.drain = 2 * time.Second
	s := start(t, f, nil, func(h *Handler) { h.ShutdownBudget = 150 * time.Millisecond })
	s.rec.waitState(t, Running)
	at := time.Now()
	s.send(t, CmdShutdown)
	s.rec.waitState(t, Stopped)
	specific, code := s.result(t)
	if !specific || code != ExitDrainCut {
		t.Fatalf("exit %v %d, want service-specific %d", specific, code, ExitDrainCut)
	}
	if d := time.Since(at); d > time.Second {
		t.Fatalf("stopped after %v, budget 150ms", d)
	}
	// A plain stop has no budget: the drain runs to its end.
	f2 := newFake()
	close(f2.serving)
	f2.drain = 300 * time.Millisecond
	s2 := start(t, f2, nil, func(h *Handler) { h.ShutdownBudget = 50 * time.Millisecond })
	s2.rec.waitState(t, Running)
	s2.send(t, CmdStop)
	if specific, code := s2.result(t); specific || code != 0 {
		t.Fatalf("stop: exit %v %d, want 0 after the whole drain", specific, code)
	}
}
