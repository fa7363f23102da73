package baton

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/lifecycle"
	"github.com/baton-go/baton/internal/observe"
)

// UpgradeOutcome records the last upgrade attempt, for Status.
type UpgradeOutcome struct {
	At     time.Time      `json:"at"`
	OK     bool           `json:"ok"`
	Result *UpgradeResult `json:"result,omitempty"`
	Code   string         `json:"code,omitempty"`
	Error  string         `json:"error,omitempty"`
}

// Upgrade starts the binary that is on disk now as the next generation,
// hands it this generation's sockets, files and state, and waits until it
// is ready (bounded by ctx and Options.ReadyTimeout). Then this generation
// stops accepting and Exit is closed: the app drains.
//
// On any failure the new process is killed, this generation keeps serving,
// and the error says what happened: ErrUpgradeInProgress,
// ErrTooManyDraining, ErrBinary, a *ChildExitError (ErrChildExited),
// ErrReadyTimeout, ErrProtocolVersion, ErrStateTooLarge, ErrStateCorrupt,
// ErrNotReady or ErrStopped.
func (u *Upgrader) Upgrade(ctx context.Context) (UpgradeResult, error) {
	return u.upgrade(ctx, nil)
}

// upgrade runs one upgrade in the engine, with prepare (UpgradeTo's
// install) as its first step.
func (u *Upgrader) upgrade(ctx context.Context, prepare func() (func(error), error)) (UpgradeResult, error) {
	if u.supervised {
		return UpgradeResult{}, ErrSupervised
	}
	if u.engine.HandingOver(u.self) {
		return UpgradeResult{}, ErrStopped // handed over: the new generation upgrades now
	}
	res, err := u.engine.UpgradeWith(ctx, prepare)
	if errors.Is(err, ErrUpgradeInProgress) {
		return UpgradeResult{}, err // the upgrade under way is not ours to report on
	}
	u.mu.Lock()
	reloading := u.reloading
	u.reloading = false
	u.mu.Unlock()
	if err != nil {
		if reloading {
			notifyReady(u.log, false, fmt.Sprintf("generation %d serving (pid %d); last upgrade failed", u.generation, os.Getpid()))
		}
		u.log.Error("upgrade failed; this generation keeps serving", "err", err)
		return UpgradeResult{}, err
	}
	u.log.Info("upgrade: handed over", "pid", res.PID, "generation", res.N,
		"ready_after", res.ReadyAfter.Round(time.Millisecond), "app_startup", res.AppStartup.Round(time.Millisecond))
	return resultOf(res), nil
}

func resultOf(r lifecycle.Result) UpgradeResult {
	return UpgradeResult{PID: r.PID, Generation: r.N, Binary: r.Binary, ReadyAfter: r.ReadyAfter,
		AppStartup: r.AppStartup, Took: r.Took, Draining: r.Draining}
}

// outcomeOf is the engine's last outcome as Status reports it.
func outcomeOf(o *lifecycle.Outcome) *UpgradeOutcome {
	if o == nil {
		return nil
	}
	out := &UpgradeOutcome{At: o.At, OK: o.Err == nil}
	if o.Err == nil && o.Result != nil {
		r := resultOf(*o.Result)
		out.Result = &r
	} else if o.Err != nil {
		out.Code, out.Error = contract.CodeOf(o.Err), o.Err.Error()
	}
	return out
}

// newEngine puts this generation (adopted, starting until Ready) into the
// one generation lifecycle (internal/lifecycle) that baton run also runs.
// The library's part is the platform below: its next generation is its own
// child, handed the sockets through the handoff; this generation drains by
// closing its listeners (Exit), and is made to exit at ForceExitAfter.
func (u *Upgrader) newEngine() {
	forceExit := u.opts.ForceExitAfter
	if forceExit < 0 {
		forceExit = -1 // never
	}
	u.engine = lifecycle.New(libPlatform{u}, lifecycle.Config{
		ReadyTimeout:     u.opts.ReadyTimeout,
		DrainTimeout:     forceExit,
		MaxDraining:      u.opts.MaxDraining,
		ExternalDraining: u.ancestors.alive,
		// The caller is answered at the switch; this generation then
		// guards its successor (see Options.Probation and Stop).
		Probation:           max(u.opts.Probation, 0),
		BackgroundProbation: true,
		Notify:              u.notice,
		Logger:              u.log,
	})
	u.self = u.engine.Adopt(selfProc{u}, u.generation)
}

// libPlatform starts the next generation as this process's child.
type libPlatform struct{ u *Upgrader }

// A rollback (RunAgain: this generation) happens only during a probation,
// after the handover: the successor died, and this generation starts its
// own binary again on the sockets it kept.
func (p libPlatform) Start(ctx context.Context, req lifecycle.StartRequest) (lifecycle.Proc, error) {
	u := p.u
	rescue := req.RunAgain != nil
	u.mu.Lock()
	if u.stopped || (u.handedOver && !rescue) {
		u.mu.Unlock()
		return nil, ErrStopped
	}
	items := make([]handoff.Item, 0, len(u.entries)+1)
	for _, e := range u.entries {
		items = append(items, e.item)
	}
	if u.ctl != nil {
		if it, ok := u.ctl.item(); ok {
			items = append(items, it)
		}
	}
	if !rescue {
		u.reloading = true
	}
	counters := u.counters
	u.mu.Unlock()
	binary, argv0, note := u.binary, "", ""
	if rescue {
		// Our own image, not the installed path: that may hold the
		// release that just died.
		img, err := ownImage()
		if err != nil {
			return nil, fmt.Errorf("%w: this generation's own binary: %v", ErrBinary, err)
		}
		binary, argv0 = img, u.binary
		note = fmt.Sprintf("generation %d (pid %d) died during its probation (%s); its predecessor (pid %d) started its own binary again",
			req.N-1, procPID(req.Serving), exitBrief(req.Serving), os.Getpid())
		u.log.Error("the new generation died during its probation; starting this generation's binary again on the sockets it kept", "dead_pid", procPID(req.Serving), "exit", exitBrief(req.Serving))
	} else {
		notifyReloading(fmt.Sprintf("upgrading generation %d", u.generation))
	}

	var state []byte
	if u.opts.StateFunc != nil {
		var err error
		if state, err = u.opts.StateFunc(); err != nil {
			return nil, fmt.Errorf("state for the next generation: %w", err)
		}
		if int64(len(state)) > u.opts.MaxStateSize {
			return nil, fmt.Errorf("%w: %d bytes, MaxStateSize is %d", ErrStateTooLarge, len(state), u.opts.MaxStateSize)
		}
	}
	u.log.Info("upgrade: starting next generation", "binary", binary)
	// The handoff itself (the child connecting for its message) is bounded
	// like the readiness that follows it.
	sctx, cancel := context.WithTimeout(ctx, u.opts.ReadyTimeout)
	defer cancel()
	child, err := handoff.Spawn(sctx, handoff.SpawnConfig{
		Binary: binary,
		Argv0:  argv0,
		Args:   u.opts.Args,
		Env:    os.Environ(),
		Items:  items,
		Message: handoff.Handoff{
			Generation: req.N,
			Parent:     handoff.Self(),
			Binary:     u.binary,
			Draining:   u.ancestors.list(),
			RolledBack: note,
			Counters:   &counters,
		},
		State:  state,
		Logger: u.log,
	})
	if err != nil {
		return nil, err
	}
	return childProc{u: u, c: child}, nil
}

// childProc is the next generation, this process's child.
type childProc struct {
	u *Upgrader
	c *handoff.Child
}

func (p childProc) PID() int       { return p.c.PID }
func (p childProc) Binary() string { return p.u.binary }

func (p childProc) WaitReady(ctx context.Context) (lifecycle.ReadyInfo, error) {
	r, err := p.c.WaitReady(ctx)
	return lifecycle.ReadyInfo{AppStartup: r.AppStartup}, err
}

// Commit hands over: the control endpoint moves first, so that a request
// arriving now is queued for the new generation instead of being answered
// by us; then the go-ahead, asking the child to tell us how it ends when
// we guard it through a probation, and to take the client connections our
// drain passes on. If the child died in between, we keep both.
func (p childProc) Commit() error {
	p.u.stopControl()
	if err := p.c.Ack(p.u.opts.Probation > 0, true); err != nil {
		p.u.serveControl()
		return fmt.Errorf("%w: go-ahead not delivered: %v", ErrRefused, err)
	}
	// Our drain passes idle client connections to it (conns.go).
	p.u.mu.Lock()
	p.u.successor = p.c
	p.u.mu.Unlock()
	return nil
}

// Chose and EndedByChoice tell the probation a child that handed over or
// was stopped from one that crashed (lifecycle.ChoiceEnder).
func (p childProc) Chose() <-chan struct{} { return p.c.Chose() }
func (p childProc) EndedByChoice() bool    { return p.c.EndedByChoice() }

func (p childProc) Abort(reason string) { p.c.Abort(reason) }
func (p childProc) Drain()              {} // never replaced by this process
func (p childProc) Kill()               { _ = p.c.Kill() }
func (p childProc) Exited() <-chan struct{} {
	return p.c.Exited()
}
func (p childProc) Err() error {
	if e := p.c.ExitErr(); e != nil {
		return e
	}
	return nil
}
func (p childProc) Release() {}

// selfProc is this generation, as the engine sees it.
type selfProc struct{ u *Upgrader }

func (p selfProc) PID() int       { return os.Getpid() }
func (p selfProc) Binary() string { return p.u.binary }
func (p selfProc) WaitReady(context.Context) (lifecycle.ReadyInfo, error) {
	return lifecycle.ReadyInfo{}, nil
}
func (p selfProc) Commit() error { return nil }
func (p selfProc) Abort(string)  {}
func (p selfProc) Release()      {}
func (p selfProc) Err() error    { return nil }

// Drain: replaced by our child; stop accepting, Exit.
func (p selfProc) Drain() { p.u.handover() }

// Exited is closed by Stop: the app has drained.
func (p selfProc) Exited() <-chan struct{} { return p.u.stoppedC }

// Kill: still alive at ForceExitAfter after the handover.
func (p selfProc) Kill() {
	p.u.log.Error("still alive long after the handover; exiting", "after", p.u.opts.ForceExitAfter)
	os.Exit(3)
}

// handover stops this generation accepting and tells the app to drain.
func (u *Upgrader) handover() {
	// A parent guarding us through our probation must not take our exit
	// for a crash: first thing, before anything can fail.
	u.parent.ReportEnd(handoff.EndHandedOver)
	u.mu.Lock()
	if u.handedOver {
		u.mu.Unlock()
		return
	}
	u.handedOver = true
	u.phase = PhaseDraining
	entries := append([]*entry(nil), u.entries...)
	u.mu.Unlock()
	for _, e := range entries {
		switch {
		case e.ln != nil:
			// Our copy only: the new generation holds the same socket, so
			// connections waiting in the accept queue are not lost.
			e.ln.Close()
		case e.pc != nil:
			// Stop reading (queued datagrams go to the new generation) but
			// keep writing, so that answers in progress are sent.
			e.pc.SetReadDeadline(time.Now())
		}
	}
	u.signalExit()
}

// ancestors are the older generations that may still drain (from the
// handoff): they count against MaxDraining. Own lock: the engine asks
// while holding its own.
type ancestors struct {
	mu    sync.Mutex
	procs []handoff.Proc
}

func (a *ancestors) add(ps ...handoff.Proc) {
	a.mu.Lock()
	a.procs = append(a.procs, ps...)
	a.mu.Unlock()
}

// list returns those still alive (and forgets the others).
func (a *ancestors) list() []handoff.Proc {
	a.mu.Lock()
	defer a.mu.Unlock()
	var live []handoff.Proc
	for _, p := range a.procs {
		if handoff.Alive(p) {
			live = append(live, p)
		}
	}
	a.procs = live
	return append([]handoff.Proc(nil), live...)
}

func (a *ancestors) alive() int { return len(a.list()) }

// procPID and exitBrief describe a generation for a message (nil-safe).
func procPID(p lifecycle.Proc) int {
	if p == nil {
		return 0
	}
	return p.PID()
}

func exitBrief(p lifecycle.Proc) string {
	if p == nil {
		return "gone"
	}
	var b interface{ Brief() string }
	if err := p.Err(); errors.As(err, &b) {
		return b.Brief()
	} else if err != nil {
		return err.Error()
	}
	return "exited"
}

// notice follows this process's engine: the events file, the counters
// carried on, and the subscribers.
func (u *Upgrader) notice(n lifecycle.Notice) {
	u.events.Notice(n)
	if n.Kind == lifecycle.NoticeFailed && n.Op == lifecycle.OpUpgrade {
		u.mu.Lock()
		u.counters.UpgradesFailed++
		u.mu.Unlock()
	}
	u.subsMu.Lock()
	fns := make([]func(events.Record), 0, len(u.subs))
	for _, fn := range u.subs {
		fns = append(fns, fn)
	}
	u.subsMu.Unlock()
	if len(fns) > 0 {
		r := observe.Record(n)
		r.Service, r.Source = u.opts.Name, "library"
		for _, fn := range fns {
			fn(r)
		}
	}
}

// Subscribe calls fn with the record of every lifecycle step of this
// generation's process from now on (an upgrade started, the next
// generation started, ready, switched, failed, rolled back, this
// generation drained...), the records the events file receives. fn is
// called synchronously: keep it short. cancel ends the subscription.
func (u *Upgrader) Subscribe(fn func(events.Record)) (cancel func()) {
	u.subsMu.Lock()
	defer u.subsMu.Unlock()
	if u.subs == nil {
		u.subs = map[int]func(events.Record){}
	}
	id := u.subsNext
	u.subsNext++
	u.subs[id] = fn
	return func() {
		u.subsMu.Lock()
		delete(u.subs, id)
		u.subsMu.Unlock()
	}
}
