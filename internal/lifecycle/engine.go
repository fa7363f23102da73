package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-go/baton/internal/contract"
)

// Config tunes an Engine. Zero values take the defaults shown.
type Config struct {
	// ReadyTimeout bounds a new generation's start-up (30s).
	ReadyTimeout time.Duration
	// DrainTimeout: a replaced generation still alive this long after it
	// was told to drain is killed (30s; negative: never).
	DrainTimeout time.Duration
	// MaxDraining refuses a switch while this many replaced generations
	// still drain (8).
	MaxDraining int
	// ExternalDraining counts draining generations the engine did not
	// start itself (a library generation's ancestors); may be nil.
	ExternalDraining func() int
	// Probation: a new generation that exits (or, with a Prober, fails
	// ProbeFailures probes in a row) within this time is replaced by the
	// previous generation's binary (0: no probation).
	Probation time.Duration
	// BackgroundProbation: Upgrade returns at the switch and the probation
	// is watched after it, still as part of the operation (nothing else
	// starts until it ends); a failure rolls back, calls the upgrade's
	// undo and becomes the last outcome. For the library, where the
	// caller is answered by the generation that hands over. WaitProbation
	// waits for it.
	BackgroundProbation bool
	ProbeInterval       time.Duration // 200ms
	ProbeFailures       int           // 3
	// MaxRestarts: how many quick crashes (or failed starts) in a row are
	// restarted before Run gives up (5; negative: never restart).
	MaxRestarts int
	RestartMin  time.Duration // first back-off (100ms)
	RestartMax  time.Duration // longest back-off (10s)
	// StableAfter: a generation that served this long before it died
	// starts a new crash count (10s).
	StableAfter time.Duration
	// Notify, when set, is called for every notice (synchronously: keep
	// it short).
	Notify func(Notice)
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ReadyTimeout, 30*time.Second)
	def(&c.DrainTimeout, 30*time.Second)
	def(&c.ProbeInterval, 200*time.Millisecond)
	def(&c.RestartMin, 100*time.Millisecond)
	def(&c.RestartMax, 10*time.Second)
	def(&c.StableAfter, 10*time.Second)
	if c.MaxDraining <= 0 {
		c.MaxDraining = 8
	}
	if c.ProbeFailures <= 0 {
		c.ProbeFailures = 3
	}
	if c.MaxRestarts == 0 {
		c.MaxRestarts = 5
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Result describes a generation that took over.
type Result struct {
	N          int
	PID        int
	Binary     string
	ReadyAfter time.Duration // from its start to its ready
	AppStartup time.Duration // the app's own part of ReadyAfter, where known
	Took       time.Duration // from the request to the switch
	Draining   int           // replaced generations still draining after the switch
}

// Op names an operation of the engine.
type Op string

const (
	OpUpgrade  Op = "upgrade"
	OpRollback Op = "rollback"
	OpRestart  Op = "restart"
	OpStart    Op = "start" // the first generation
	OpStop     Op = "stop"
)

// Outcome records the last upgrade or rollback.
type Outcome struct {
	At     time.Time
	Op     Op
	Result *Result // the generation that serves after it, if one took over
	Err    error   // nil: it succeeded
}

// Engine runs the generations of one service.
type Engine struct {
	plat Platform
	cfg  Config
	log  *slog.Logger

	opMu sync.Mutex // one upgrade, rollback or restart at a time

	mu         sync.Mutex
	current    *Generation
	previous   *Generation   // what a rollback runs again
	starting   *Generation   // being started by the operation under way
	committing *Generation   // being handed over to
	commitDone chan struct{} // closed when that commit has ended
	draining   []*Generation
	next       int
	phase      Phase
	stopping   bool
	last       *Outcome
	restarts   int
	changed    chan struct{}          // closed and replaced when current changes
	probation  *probation             // the upgrade on probation, if any
	probDone   chan struct{}          // closed when a background probation has ended
	op         atomic.Pointer[opInfo] // the operation under way, for notices
	drains     sync.WaitGroup

	ctx    context.Context // ended by Halt or Stop: everything waiting gives up
	cancel context.CancelFunc
}

// New returns an engine with no generation yet.
func New(plat Platform, cfg Config) *Engine {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Engine{plat: plat, cfg: cfg, log: cfg.Logger, phase: PhaseStarting, changed: make(chan struct{}), ctx: ctx, cancel: cancel}
}

// Adopt makes p, started by someone else (the library's own process, or a
// parent generation), the engine's current generation number n, in state
// Starting until MarkServing.
func (e *Engine) Adopt(p Proc, n int) *Generation {
	g := &Generation{N: n, Proc: p, Reason: ReasonStart, Started: time.Now(), state: Starting}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.next = max(e.next, n)
	e.setCurrentLocked(g)
	return g
}

// MarkServing records that the adopted generation g got ready and serves.
func (e *Engine) MarkServing(g *Generation) {
	g.apply(EvCommit, e.log)
	g.servingAt(time.Now())
	e.mu.Lock()
	if e.current == g && !e.stopping {
		e.phase = PhaseServing
	}
	e.mu.Unlock()
	e.notify(Notice{Kind: NoticeServing, Gen: g.view()})
}

// Run starts the first generation (with the crash back-off if it fails)
// and keeps one serving: a generation that dies while it serves is
// replaced, by the binary it ran, after a back-off that grows with quick
// crashes in a row. It returns nil after a stop (ctx ended, or Stop), or
// an error wrapping contract.ErrGaveUp when the app keeps failing. Every
// generation is gone when it returns.
func (e *Engine) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, e.Halt)
	defer stop()
	if err := e.restart(ReasonStart, nil, 0); err != nil {
		return e.runEnded(err) // a stop while starting is a stop
	}
	crashes := 0
	for {
		cur, changed := e.currentAndChanged()
		select {
		case <-e.ctx.Done():
			e.Stop()
			return nil
		case <-changed:
			continue // an upgrade or rollback switched generations: watch the new one
		case <-cur.Proc.Exited():
		}
		// An operation under way decides what follows this exit (a
		// generation on probation is rolled back, not restarted; a switch
		// replaces it): look again once it is over.
		e.opMu.Lock()
		e.opMu.Unlock()
		if e.isStopping() || e.Current() != cur {
			continue
		}
		cur.apply(EvExit, e.log)
		if cur.servedFor() >= e.cfg.StableAfter {
			crashes = 0
		}
		crashes++
		brief := exitBrief(cur.Proc.Err())
		if e.cfg.MaxRestarts >= 0 && crashes > e.cfg.MaxRestarts && e.canFallBack(cur) {
			why := fmt.Errorf("generation %d crashed %d times in a row, each within %v; last: %s", cur.N, crashes, e.cfg.StableAfter, brief)
			crashes = 0
			if err := e.fallBack(cur, why); err != nil {
				return e.runEnded(err)
			}
			continue
		}
		if e.cfg.MaxRestarts < 0 || crashes > e.cfg.MaxRestarts {
			var err error
			if e.cfg.MaxRestarts < 0 {
				err = fmt.Errorf("%w: generation %d (pid %d) died (%s) and restarts are off", contract.ErrGaveUp, cur.N, cur.Proc.PID(), brief)
			} else {
				err = fmt.Errorf("%w: generation %d crashed %d times in a row, each within %v; last: %s", contract.ErrGaveUp, cur.N, crashes, e.cfg.StableAfter, brief)
			}
			e.log.Error("the serving generation died; not restarting it", "gen", cur.N, "pid", cur.Proc.PID(), "exit", brief, "crashes_in_a_row", crashes)
			e.notify(Notice{Kind: NoticeGaveUp, Gen: cur.view(), Err: err})
			e.Stop()
			return err
		}
		e.log.Error("the serving generation died; restarting it", "gen", cur.N, "pid", cur.Proc.PID(), "exit", brief, "crashes_in_a_row", crashes)
		e.notify(Notice{Kind: NoticeCrashed, Gen: cur.view(), Err: cur.Proc.Err()})
		if err := e.restart(ReasonRestart, cur, crashes); err != nil {
			if errors.Is(err, contract.ErrGaveUp) && e.ctx.Err() == nil && e.canFallBack(cur) {
				// Its restarts do not even get ready: same as a crash loop.
				crashes = 0
				err = e.fallBack(cur, err)
			}
			if err != nil {
				return e.runEnded(err)
			}
		}
	}
}

// runEnded stops the engine after Run failed to keep a generation
// serving; a stop asked meanwhile is no failure.
func (e *Engine) runEnded(err error) error {
	halted := e.ctx.Err() != nil
	e.Stop()
	if halted {
		return nil
	}
	return err
}

// fallBack replaces dead, whose release keeps crashing, by the release
// that served before it: a crash loop must not leave the port dark while
// that one could serve. It happens once: the generation fallen back to is
// no fallback (nor rollback) target any more.
func (e *Engine) fallBack(dead *Generation, why error) error {
	dead.reject()
	e.log.Error("the serving release keeps crashing; falling back to the release that served before it", "gen", dead.N, "pid", dead.Proc.PID(), "why", why, "fallback_binary", e.previousBinary())
	e.notify(Notice{Kind: NoticeFallingBack, Gen: dead.view(), Err: why})
	at := time.Now()
	if err := e.restart(ReasonFallback, dead, 1); err != nil {
		return err
	}
	if g := e.Current(); g != nil && g != dead {
		rolled := fmt.Errorf("%w: %w; generation %d (pid %d) runs the release that served before it", contract.ErrRolledBack, why, g.N, g.Proc.PID())
		e.record(OpRollback, at, e.result(g, at), rolled)
		e.notify(Notice{Kind: NoticeRolledBack, Gen: g.view(), Err: rolled})
	}
	return nil
}

// canFallBack reports whether a crash loop of cur can fall back to the
// generation that served before it.
func (e *Engine) canFallBack(cur *Generation) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.previous != nil && e.previous != cur && !e.previous.isRejected()
}

func (e *Engine) previousBinary() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.previous == nil {
		return ""
	}
	return e.previous.Proc.Binary()
}

// restart starts a generation to replace dead (nil: the first one), with
// exponential back-off between failed attempts.
func (e *Engine) restart(reason Reason, dead *Generation, crashes int) error {
	e.opMu.Lock()
	defer e.opMu.Unlock()
	kind := OpRestart
	switch reason {
	case ReasonStart:
		kind = OpStart
	case ReasonFallback:
		kind = OpRollback
	}
	defer e.endOp(e.beginOp(kind))
	e.mu.Lock()
	if e.current != dead {
		e.mu.Unlock()
		return nil // replaced meanwhile (a switch after the crash)
	}
	if dead != nil {
		e.phase = PhaseRestarting
	}
	e.mu.Unlock()
	delay := e.cfg.RestartMin
	for i := 1; i < crashes; i++ {
		delay = min(2*delay, e.cfg.RestartMax)
	}
	var runAgain Proc
	if dead != nil {
		runAgain = dead.Proc // what crashed runs again (the installed file may be a rejected release)
		e.mu.Lock()
		if dead.isRejected() && e.previous != nil {
			// It failed its probation and the rollback failed too: what
			// served before it is what runs again, not the rejected one.
			runAgain = e.previous.Proc
		}
		e.mu.Unlock()
	}
	for failures := 0; ; {
		if crashes > 0 || failures > 0 {
			e.mu.Lock()
			e.restarts++
			e.mu.Unlock()
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-e.ctx.Done():
				t.Stop()
				return fmt.Errorf("%w: stopped while restarting", contract.ErrCanceled)
			}
			delay = min(2*delay, e.cfg.RestartMax)
		}
		g, err := e.startReady(e.ctx, StartRequest{N: e.nextN(), Reason: reason, RunAgain: runAgain})
		if err == nil {
			err = e.commit(g)
		}
		if err == nil {
			e.mu.Lock()
			releaseDead := dead != nil && dead != e.previous
			var releasePrev *Generation
			if reason == ReasonFallback && e.previous != nil {
				// Fallen back to it: it is no rollback target any more,
				// and a crash loop of it gives up rather than going round.
				releasePrev, e.previous = e.previous, nil
			}
			e.setCurrentLocked(g)
			if !e.stopping {
				e.phase = PhaseServing
			}
			e.mu.Unlock()
			if releaseDead {
				dead.Proc.Release()
			}
			if releasePrev != nil {
				releasePrev.Proc.Release()
			}
			e.log.Info("generation serving", "gen", g.N, "pid", g.Proc.PID(), "ready_after", g.readyAfter.Round(time.Millisecond), "why", string(reason))
			e.notify(Notice{Kind: NoticeServing, Gen: g.view()})
			return nil
		}
		if e.ctx.Err() != nil {
			return err
		}
		failures++
		e.log.Error("generation failed to start", "why", string(reason), "failures", failures, "err", err)
		if failures >= e.cfg.MaxRestarts {
			return fmt.Errorf("%w: %d failed starts in a row; last: %v", contract.ErrGaveUp, failures, err)
		}
		if reason != ReasonFallback {
			reason = ReasonRestart
		}
	}
}

// Upgrade starts the installed binary as the next generation, waits until
// it is ready, switches to it and drains the one it replaces. With a
// probation, a new generation that fails it is replaced by the previous
// binary and the error wraps contract.ErrRolledBack. On any other failure
// the new process is killed and the serving generation stays.
func (e *Engine) Upgrade(ctx context.Context) (Result, error) {
	return e.UpgradeWith(ctx, nil)
}

// UpgradeWith is Upgrade with prepare run first, as part of the same
// operation: nothing else starts a generation between prepare (say,
// installing a new binary) and the upgrade. If prepare fails, that is the
// upgrade's error; if the upgrade fails, undo (when prepare returned one)
// is called with its error before the operation ends.
func (e *Engine) UpgradeWith(ctx context.Context, prepare func() (undo func(error), err error)) (Result, error) {
	if !e.opMu.TryLock() {
		return Result{}, e.busy()
	}
	background := false
	op := e.beginOp(OpUpgrade)
	defer func() {
		if !background {
			e.endOp(op)
			e.opMu.Unlock()
		}
	}()
	start := time.Now()
	var undo func(error)
	var err error
	if prepare != nil {
		if undo, err = prepare(); err != nil {
			e.record(OpUpgrade, start, Result{}, err)
			return Result{}, err
		}
	}
	var pdone chan struct{}
	if e.cfg.BackgroundProbation && e.cfg.Probation > 0 {
		// Registered before the switch: the replaced generation is told
		// to drain during it, and must find the probation to wait for.
		pdone = make(chan struct{})
		e.mu.Lock()
		e.probDone = pdone
		e.mu.Unlock()
	}
	endProbation := func() {
		if pdone != nil {
			close(pdone)
		}
	}
	res, g, old, err := e.upgrade(ctx, start)
	if err == nil && old != nil && e.cfg.Probation > 0 {
		if pdone != nil {
			background = true
			e.record(OpUpgrade, start, res, nil)
			go func() {
				defer e.opMu.Unlock()
				defer e.endOp(op)
				defer endProbation()
				if _, perr := e.probate(e.ctx, g, old, res, start); perr != nil {
					if undo != nil {
						undo(perr)
					}
					e.record(OpUpgrade, start, res, perr)
				}
			}()
			return res, nil
		}
		pctx, cancel := e.opContext(ctx)
		res, err = e.probate(pctx, g, old, res, start)
		cancel()
	}
	endProbation()
	if err != nil && undo != nil {
		undo(err)
	}
	e.record(OpUpgrade, start, res, err)
	return res, err
}

// SetLast records o as the last outcome (a generation started to replace
// one that failed, reporting what its starter saw).
func (e *Engine) SetLast(o Outcome) {
	e.mu.Lock()
	e.last = &o
	e.mu.Unlock()
}

// WaitDrains waits until every generation told to drain has exited (or
// been killed at the drain deadline) and its notice was sent.
func (e *Engine) WaitDrains() { e.drains.Wait() }

// WaitProbation waits until a background probation (BackgroundProbation)
// has ended: a generation that handed over keeps what it needs to serve
// again until then.
func (e *Engine) WaitProbation() {
	e.mu.Lock()
	done := e.probDone
	e.mu.Unlock()
	if done != nil {
		<-done
	}
}

// upgrade switches to a new generation; it returns it and the one it
// replaced (nil when there was none).
func (e *Engine) upgrade(ctx context.Context, start time.Time) (Result, *Generation, *Generation, error) {
	ctx, cancel := e.opContext(ctx)
	defer cancel()
	old, err := e.begin(PhaseUpgrading)
	if err != nil {
		return Result{}, nil, nil, err
	}
	e.notify(Notice{Kind: NoticeUpgrading, Gen: old.view()})
	g, err := e.switchTo(ctx, ReasonUpgrade, old, nil)
	if err != nil {
		e.log.Error("upgrade failed; "+e.afterFailure(), "err", err)
		e.notify(Notice{Kind: NoticeFailed, Err: err})
		return Result{}, nil, nil, err
	}
	return e.result(g, start), g, old, nil
}

// probate watches g through its probation and rolls back to old's binary
// if it fails (or a rollback is asked for meanwhile).
func (e *Engine) probate(ctx context.Context, g, old *Generation, res Result, start time.Time) (Result, error) {
	p := &probation{rollback: make(chan struct{}), done: make(chan struct{})}
	e.mu.Lock()
	e.phase = PhaseProbation
	e.probation = p
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.probation = nil
		if e.phase == PhaseProbation || e.phase == PhaseRollingBack {
			e.phase = PhaseServing
		}
		e.mu.Unlock()
		close(p.done)
	}()
	reason := e.watchProbation(ctx, g, p)
	if reason == nil {
		e.log.Info("probation passed", "gen", g.N, "pid", g.Proc.PID(), "probation", e.cfg.Probation)
		e.notify(Notice{Kind: NoticeProbationPassed, Gen: g.view()})
		return res, nil
	}
	if errors.Is(reason, contract.ErrCanceled) || ctx.Err() != nil && !errors.Is(reason, errRollbackAsked) {
		return res, reason // stopping: nothing to roll back to
	}
	e.log.Error("new generation failed its probation; rolling back", "gen", g.N, "pid", g.Proc.PID(), "err", reason)
	e.notify(Notice{Kind: NoticeProbationFailed, Gen: g.view(), Err: reason})
	e.mu.Lock()
	e.phase = PhaseRollingBack
	e.mu.Unlock()
	back, err := e.switchTo(ctx, ReasonRollback, g, old)
	if err != nil {
		g.reject()
		err = fmt.Errorf("generation %d failed its probation (%v), and the rollback failed too: %w", g.N, reason, err)
		p.ran, p.result, p.err = true, Result{}, err
		return res, err
	}
	// The failed generation is no rollback target.
	e.mu.Lock()
	if e.previous == g {
		e.previous = nil
	}
	e.mu.Unlock()
	g.Proc.Release()
	p.ran, p.result = true, e.result(back, start)
	e.notify(Notice{Kind: NoticeRolledBack, Gen: back.view(), Err: reason})
	return res, fmt.Errorf("%w: generation %d (pid %d) failed its probation: %w; generation %d (pid %d) runs the previous binary again",
		contract.ErrRolledBack, g.N, g.Proc.PID(), reason, back.N, back.Proc.PID())
}

var errRollbackAsked = errors.New("a rollback was asked for during the probation")

func (e *Engine) watchProbation(ctx context.Context, g *Generation, p *probation) error {
	end := time.NewTimer(e.cfg.Probation)
	defer end.Stop()
	prober, _ := e.plat.(Prober)
	var tick <-chan time.Time
	if prober != nil {
		t := time.NewTicker(e.cfg.ProbeInterval)
		defer t.Stop()
		tick = t.C
	}
	exited := func() error {
		if c, ok := g.Proc.(ChoiceEnder); ok && c.EndedByChoice() {
			e.log.Info("the new generation ended by choice during its probation (handed over or stopped)", "gen", g.N, "pid", g.Proc.PID())
			return nil
		}
		return &probationExit{err: g.Proc.Err()}
	}
	var chose <-chan struct{}
	if c, ok := g.Proc.(ChoiceEnder); ok {
		chose = c.Chose()
	}
	failures := 0
	for {
		select {
		case <-chose:
			e.log.Info("the new generation handed over or was stopped during its probation; probation over", "gen", g.N, "pid", g.Proc.PID())
			return nil
		case <-g.Proc.Exited():
			return exited()
		case <-end.C:
			// An exit wins over the end of probation when both are there.
			select {
			case <-g.Proc.Exited():
				return exited()
			default:
			}
			return nil
		case <-p.rollback:
			return errRollbackAsked
		case <-ctx.Done():
			return fmt.Errorf("%w: stopped during the probation", contract.ErrCanceled)
		case <-tick:
			if prober.Healthy(ctx, g.Proc) {
				failures = 0
			} else if failures++; failures >= e.cfg.ProbeFailures {
				return fmt.Errorf("health probe failed %d times in a row", failures)
			}
		}
	}
}

// Rollback runs the previous generation's binary again as a new
// generation and switches to it. Asked during a probation, it ends the
// probation at once with that rollback.
func (e *Engine) Rollback(ctx context.Context) (Result, error) {
	if !e.opMu.TryLock() {
		e.mu.Lock()
		p := e.probation
		e.mu.Unlock()
		if p == nil {
			return Result{}, e.busy()
		}
		p.ask()
		select {
		case <-p.done:
		case <-ctx.Done():
			return Result{}, fmt.Errorf("%w: %v", contract.ErrCanceled, ctx.Err())
		}
		if p.ran {
			return p.result, p.err
		}
		// The probation ended (passed, or stopped) before it saw the
		// request: roll back now, as asked.
		e.opMu.Lock()
	}
	defer e.opMu.Unlock()
	defer e.endOp(e.beginOp(OpRollback))
	start := time.Now()
	res, err := e.rollback(ctx, start)
	e.record(OpRollback, start, res, err)
	return res, err
}

func (e *Engine) rollback(ctx context.Context, start time.Time) (Result, error) {
	ctx, cancel := e.opContext(ctx)
	defer cancel()
	e.mu.Lock()
	prev := e.previous
	e.mu.Unlock()
	if prev == nil {
		return Result{}, fmt.Errorf("%w: nothing to roll back to: no previous generation in this supervisor's life", contract.ErrNoPrevious)
	}
	cur, err := e.begin(PhaseRollingBack)
	if err != nil {
		return Result{}, err
	}
	g, err := e.switchTo(ctx, ReasonRollback, cur, prev)
	if err != nil {
		e.log.Error("rollback failed; "+e.afterFailure(), "err", err)
		e.notify(Notice{Kind: NoticeFailed, Err: err})
		return Result{}, err
	}
	e.notify(Notice{Kind: NoticeRolledBack, Gen: g.view()})
	return e.result(g, start), nil
}

// begin checks that a switch may start and sets the phase; it returns the
// serving generation.
func (e *Engine) begin(phase Phase) (*Generation, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopping {
		return nil, contract.ErrStopped
	}
	cur := e.current
	if cur == nil || cur.State() != Serving {
		return nil, contract.ErrNotReady
	}
	if n := e.drainingLocked(); n >= e.cfg.MaxDraining {
		return nil, fmt.Errorf("%w: %d older generations are still draining (max %d); retry when one has exited", contract.ErrTooManyDraining, n, e.cfg.MaxDraining)
	}
	e.phase = phase
	return cur, nil
}

// switchTo starts a generation (running runAgain's binary when set),
// waits until it is ready, commits it as the current generation and
// drains serving. On failure nothing changes.
func (e *Engine) switchTo(ctx context.Context, reason Reason, serving, runAgain *Generation) (*Generation, error) {
	defer func() {
		e.mu.Lock()
		if e.phase == PhaseUpgrading || (e.phase == PhaseRollingBack && e.probation == nil) {
			e.phase = PhaseServing
		}
		e.mu.Unlock()
	}()
	req := StartRequest{N: e.nextN(), Reason: reason, Serving: procOf(serving), RunAgain: procOf(runAgain)}
	g, err := e.startReady(ctx, req)
	if err != nil && reason == ReasonRollback && ctx.Err() == nil && !e.isStopping() && !errors.Is(err, contract.ErrBinary) {
		// An older binary may refuse a newer generation's state: a
		// rollback must not fail for it.
		e.log.Warn("the rollback generation failed with the serving generation's state; starting it again without", "err", err)
		req.N, req.WithoutState = e.nextN(), true
		g, err = e.startReady(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	readyAt := time.Now()
	if err := e.commit(g); err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.setCurrentLocked(g)
	var release *Generation
	if p := e.previous; p != nil && p != serving && p != g {
		release = p // only the previous generation's binary can be needed again
	}
	e.previous = serving
	if !e.stopping {
		e.phase = PhaseServing
	}
	if serving != nil {
		e.draining = append(e.draining, serving)
	}
	e.mu.Unlock()
	if release != nil {
		release.Proc.Release()
	}
	if serving != nil {
		e.drain(serving)
	}
	e.log.Info("switched", "gen", g.N, "pid", g.Proc.PID(), "ready_after", g.readyAfter.Round(time.Millisecond), "why", string(reason))
	e.notify(Notice{Kind: NoticeSwitched, Gen: g.view(), Took: time.Since(readyAt)})
	return g, nil
}

// startReady starts a generation and waits until it is ready; on failure
// it is aborted.
func (e *Engine) startReady(ctx context.Context, req StartRequest) (*Generation, error) {
	started := time.Now()
	p, err := e.plat.Start(ctx, req)
	if err != nil {
		return nil, err
	}
	g := &Generation{N: req.N, Proc: p, Reason: req.Reason, Started: started, state: Starting}
	e.mu.Lock()
	e.starting = g
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.starting = nil
		e.mu.Unlock()
	}()
	e.notify(Notice{Kind: NoticeStarted, Gen: g.view()})
	rctx, cancel := context.WithTimeout(ctx, e.cfg.ReadyTimeout)
	info, err := p.WaitReady(rctx)
	if err == nil {
		// A probe may have been answered by the generation it replaces:
		// it must still be alive to count as ready.
		select {
		case <-p.Exited():
			err = p.Err()
			if err == nil {
				err = fmt.Errorf("%w: pid %d", contract.ErrChildExited, p.PID())
			}
		default:
		}
	}
	if err != nil {
		switch {
		case errors.Is(err, contract.ErrChildExited), errors.Is(err, contract.ErrReadyTimeout), errors.Is(err, contract.ErrCanceled),
			errors.Is(err, contract.ErrRefused), errors.Is(err, contract.ErrVersion), errors.Is(err, contract.ErrStateCorrupt),
			errors.Is(err, contract.ErrStateTooLarge):
		case ctx.Err() != nil:
			err = fmt.Errorf("%w while waiting for pid %d to get ready; it was killed: %v", contract.ErrCanceled, p.PID(), err)
		case rctx.Err() != nil:
			err = fmt.Errorf("%w (pid %d, %v): %v", contract.ErrReadyTimeout, p.PID(), e.cfg.ReadyTimeout, err)
		}
	}
	cancel()
	if err != nil {
		p.Abort(err.Error())
		g.apply(EvFail, e.log)
		e.notify(Notice{Kind: NoticeStartFailed, Gen: g.view(), Err: err})
		p.Release() // after the notice: it may still read what the generation ran
		return nil, err
	}
	g.apply(EvReady, e.log)
	g.mu.Lock()
	g.readyAfter = time.Since(started)
	g.appStartup = info.AppStartup
	g.mu.Unlock()
	e.notify(Notice{Kind: NoticeReady, Gen: g.view(), Took: g.readyAfter})
	return g, nil
}

// commit hands over to g, unless the engine is stopping (decided under the
// lock, so that a stop either cancels the switch or sees it done).
func (e *Engine) commit(g *Generation) error {
	e.mu.Lock()
	if e.stopping {
		e.mu.Unlock()
		g.Proc.Abort("the service is stopping")
		g.apply(EvFail, e.log)
		g.Proc.Release()
		return fmt.Errorf("%w: the service was stopped during the switch; pid %d was killed", contract.ErrCanceled, g.Proc.PID())
	}
	e.committing = g
	done := make(chan struct{})
	e.commitDone = done
	e.mu.Unlock()
	err := g.Proc.Commit()
	e.mu.Lock()
	e.committing = nil
	close(done)
	e.mu.Unlock()
	if err != nil {
		// A canary judged and backed out (proxy mode), or called off, says
		// so itself; anything else is a go-ahead that did not arrive.
		decided := errors.Is(err, contract.ErrCanaryFailed) || errors.Is(err, contract.ErrCanceled)
		reason := "go-ahead not delivered"
		if decided {
			reason = "backed out: " + err.Error()
		}
		g.Proc.Abort(reason)
		g.apply(EvFail, e.log)
		g.Proc.Release()
		if decided {
			e.log.Warn("new generation backed out", "gen", g.N, "pid", g.Proc.PID(), "err", err)
			return err
		}
		e.log.Error("new generation vanished before the handover", "gen", g.N, "pid", g.Proc.PID(), "err", err)
		if !errors.Is(err, contract.ErrRefused) {
			err = fmt.Errorf("%w: go-ahead not delivered: %v", contract.ErrRefused, err)
		}
		return err
	}
	g.apply(EvCommit, e.log)
	g.servingAt(time.Now())
	return nil
}

// drain tells g to drain and kills it at the drain deadline.
func (e *Engine) drain(g *Generation) {
	g.apply(EvDrain, e.log)
	e.drains.Add(1)
	began := time.Now()
	var op Op
	var deployment string
	if o := e.op.Load(); o != nil {
		op, deployment = o.kind, o.id
	}
	go func() {
		defer e.drains.Done()
		var deadline <-chan time.Time
		if e.cfg.DrainTimeout > 0 {
			t := time.NewTimer(e.cfg.DrainTimeout)
			defer t.Stop()
			deadline = t.C
		}
		// Telling it may take a while (a link exchange): the deadline
		// runs meanwhile.
		go g.Proc.Drain()
		select {
		case <-g.Proc.Exited():
		case <-deadline:
			e.log.Warn("generation still running at the drain deadline; killing it", "gen", g.N, "pid", g.Proc.PID(), "deadline", e.cfg.DrainTimeout)
			e.notify(Notice{Kind: NoticeKilled, Gen: g.view(), Op: op, Deployment: deployment, Took: time.Since(began)})
			g.Proc.Kill()
			<-g.Proc.Exited()
		}
		g.apply(EvExit, e.log)
		e.mu.Lock()
		for i, d := range e.draining {
			if d == g {
				e.draining = append(e.draining[:i:i], e.draining[i+1:]...)
				break
			}
		}
		e.mu.Unlock()
		e.notify(Notice{Kind: NoticeDrained, Gen: g.view(), Op: op, Deployment: deployment, Took: time.Since(began)})
	}()
}

// Halt ends every wait of the engine (an upgrade under way is called off,
// a back-off ends) and refuses new operations; it does not wait. Stop
// does the rest.
func (e *Engine) Halt() {
	e.mu.Lock()
	if !e.stopping {
		e.stopping = true
		e.phase = PhaseStopping
	}
	e.mu.Unlock()
	e.cancel()
}

// Stop halts the engine, waits for the operation under way to give up,
// drains every generation (each killed at the drain deadline) and returns
// when all are gone.
func (e *Engine) Stop() {
	e.Halt()
	e.opMu.Lock()
	defer e.opMu.Unlock()
	defer e.endOp(e.beginOp(OpStop))
	e.mu.Lock()
	cur := e.current
	e.mu.Unlock()
	if cur != nil && cur.State() == Serving {
		e.notify(Notice{Kind: NoticeStopping, Gen: cur.view()})
		e.mu.Lock()
		e.draining = append(e.draining, cur)
		e.mu.Unlock()
		e.drain(cur)
	}
	e.drains.Wait()
	e.mu.Lock()
	prev := e.previous
	e.previous = nil
	e.phase = PhaseStopped
	e.mu.Unlock()
	if prev != nil {
		prev.Proc.Release()
	}
	if cur != nil {
		cur.Proc.Release()
	}
}

// Stopping reports whether Halt or Stop was called.
func (e *Engine) Stopping() bool { return e.isStopping() }

// HandingOver reports whether a switch is being committed or was: the
// generation adopted by the library has handed over (or is handing over)
// once this is true.
func (e *Engine) HandingOver(self *Generation) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.committing != nil || (e.current != nil && e.current != self)
}

// WaitCommit waits until a handover being committed has ended (either
// way), so that HandingOver then says how it ended.
func (e *Engine) WaitCommit() {
	e.mu.Lock()
	done := e.commitDone
	e.mu.Unlock()
	if done != nil {
		<-done
	}
}

// Current returns the serving generation (nil before the first).
func (e *Engine) Current() *Generation {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.current
}

// Changed returns a channel closed when the current generation changes.
func (e *Engine) Changed() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

func (e *Engine) currentAndChanged() (*Generation, <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.current, e.changed
}

func (e *Engine) setCurrentLocked(g *Generation) {
	e.current = g
	close(e.changed)
	e.changed = make(chan struct{})
}

func (e *Engine) isStopping() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stopping
}

func (e *Engine) nextN() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.next++
	return e.next
}

// drainingLocked counts replaced generations still alive.
func (e *Engine) drainingLocked() int {
	n := 0
	for _, g := range e.draining {
		select {
		case <-g.Proc.Exited():
		default:
			n++
		}
	}
	if e.cfg.ExternalDraining != nil {
		n += e.cfg.ExternalDraining()
	}
	return n
}

func (e *Engine) busy() error {
	if e.isStopping() {
		return contract.ErrStopped
	}
	return contract.ErrBusy
}

// opContext is ctx, also ended by Halt.
func (e *Engine) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(e.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

func (e *Engine) result(g *Generation, start time.Time) Result {
	g.mu.Lock()
	ready, app := g.readyAfter, g.appStartup
	g.mu.Unlock()
	e.mu.Lock()
	draining := e.drainingLocked()
	e.mu.Unlock()
	return Result{N: g.N, PID: g.Proc.PID(), Binary: g.Proc.Binary(), ReadyAfter: ready, AppStartup: app, Took: time.Since(start), Draining: draining}
}

func (e *Engine) record(op Op, at time.Time, res Result, err error) {
	out := &Outcome{At: at, Op: op, Err: err}
	if err == nil || errors.Is(err, contract.ErrRolledBack) {
		r := res
		out.Result = &r
	}
	e.mu.Lock()
	e.last = out
	e.mu.Unlock()
}

// afterFailure says what serves after a failed switch.
func (e *Engine) afterFailure() string {
	cur := e.Current()
	if cur == nil {
		return "no generation serves yet"
	}
	select {
	case <-cur.Proc.Exited():
		return fmt.Sprintf("the current generation (pid %d) has exited too; it is being restarted", cur.Proc.PID())
	default:
		return fmt.Sprintf("the current generation (pid %d) keeps serving", cur.Proc.PID())
	}
}

func (e *Engine) notify(n Notice) {
	if e.cfg.Notify == nil {
		return
	}
	n.At = time.Now()
	if o := e.op.Load(); o != nil && n.Deployment == "" {
		n.Op, n.Deployment = o.kind, o.id
		if n.Took == 0 && (n.Kind == NoticeStarted || n.Kind == NoticeFailed || n.Kind == NoticeRolledBack || n.Kind == NoticeProbationPassed || n.Kind == NoticeProbationFailed) {
			n.Took = n.At.Sub(o.start)
		}
	}
	e.cfg.Notify(n)
}

// opInfo is an operation under way, as notices name it.
type opInfo struct {
	kind  Op
	id    string
	start time.Time
}

// beginOp names the operation that starts now (its notices carry the id)
// and returns what endOp takes to end it.
func (e *Engine) beginOp(kind Op) *opInfo {
	o := newOp(kind)
	e.op.Store(o)
	return o
}

func newOp(kind Op) *opInfo {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &opInfo{kind: kind, id: hex.EncodeToString(b[:]), start: time.Now()}
}

// RecordStop records that the host stops its serving generation itself
// (the library's Stop: the app drains, not Proc.Drain) as a stop
// operation of its own. It does not wait for an operation under way.
func (e *Engine) RecordStop() {
	e.mu.Lock()
	cur := e.current
	e.mu.Unlock()
	if cur == nil {
		return
	}
	o := newOp(OpStop)
	e.notify(Notice{Kind: NoticeStopping, Gen: cur.view(), Op: o.kind, Deployment: o.id})
}

func (e *Engine) endOp(o *opInfo) { e.op.CompareAndSwap(o, nil) }

// probation is an upgrade whose new generation is on probation.
type probation struct {
	ran      bool // the rollback asked for ran (result, err say how)
	once     sync.Once
	rollback chan struct{} // closed: a rollback was asked for
	done     chan struct{} // closed when the upgrade (and its rollback) ended
	result   Result        // of the rollback, for the one who asked
	err      error
}

func (p *probation) ask() { p.once.Do(func() { close(p.rollback) }) }

func procOf(g *Generation) Proc {
	if g == nil {
		return nil
	}
	return g.Proc
}

// probationExit: a generation on probation exited. It was ready, so its
// ExitError ("exited before it was ready") is kept for errors.As (exit
// code, stderr tail) but not for the message.
type probationExit struct{ err error }

func (e *probationExit) Error() string {
	if e.err == nil {
		return "it exited"
	}
	return "it exited (" + exitBrief(e.err) + ")"
}

func (e *probationExit) Unwrap() error {
	if e.err != nil {
		return e.err
	}
	return contract.ErrChildExited
}

func exitBrief(err error) string {
	var b interface{ Brief() string }
	if errors.As(err, &b) {
		return b.Brief()
	}
	if err == nil {
		return "exited"
	}
	return err.Error()
}
