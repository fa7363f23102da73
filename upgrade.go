package baton

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/baton-go/baton/internal/handoff"
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
	if !u.upgradeMu.TryLock() {
		return UpgradeResult{}, ErrUpgradeInProgress
	}
	defer u.upgradeMu.Unlock()
	return u.runUpgrade(ctx)
}

// runUpgrade is Upgrade with upgradeMu held.
func (u *Upgrader) runUpgrade(ctx context.Context) (UpgradeResult, error) {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	u.mu.Lock()
	u.cancelUpgrade = cancel
	u.mu.Unlock()
	res, err := u.upgrade(ctx, start)
	u.mu.Lock()
	u.cancelUpgrade = nil
	u.mu.Unlock()
	out := &UpgradeOutcome{At: start, OK: err == nil}
	if err == nil {
		out.Result = &res
	} else {
		out.Code, out.Error = errorCode(err), err.Error()
	}
	u.mu.Lock()
	u.last = out
	u.mu.Unlock()
	return res, err
}

func (u *Upgrader) upgrade(ctx context.Context, start time.Time) (UpgradeResult, error) {
	if u.supervised {
		return UpgradeResult{}, ErrSupervised
	}
	u.mu.Lock()
	switch {
	case u.stopped || u.handedOver:
		u.mu.Unlock()
		return UpgradeResult{}, ErrStopped
	case u.phase == PhaseStarting:
		u.mu.Unlock()
		return UpgradeResult{}, ErrNotReady
	}
	var stillDraining []handoff.Proc
	for _, p := range u.draining {
		if handoff.Alive(p) {
			stillDraining = append(stillDraining, p)
		}
	}
	u.draining = stillDraining
	if len(stillDraining) >= u.opts.MaxDraining {
		u.mu.Unlock()
		return UpgradeResult{}, fmt.Errorf("%w: %d older generations are still draining (MaxDraining=%d); retry when one has exited", ErrTooManyDraining, len(stillDraining), u.opts.MaxDraining)
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
	u.phase = PhaseUpgrading
	u.mu.Unlock()

	ok := false
	defer func() {
		if !ok {
			u.mu.Lock()
			if u.phase == PhaseUpgrading {
				u.phase = PhaseServing
			}
			u.mu.Unlock()
			notifyReady(u.log, false, fmt.Sprintf("generation %d serving (pid %d); last upgrade failed", u.generation, os.Getpid()))
		}
	}()
	notifyReloading(fmt.Sprintf("upgrading generation %d", u.generation))

	var state []byte
	if u.opts.StateFunc != nil {
		var err error
		if state, err = u.opts.StateFunc(); err != nil {
			return UpgradeResult{}, fmt.Errorf("state for the next generation: %w", err)
		}
		if int64(len(state)) > u.opts.MaxStateSize {
			return UpgradeResult{}, fmt.Errorf("%w: %d bytes, MaxStateSize is %d", ErrStateTooLarge, len(state), u.opts.MaxStateSize)
		}
	}

	u.log.Info("upgrade: starting next generation", "binary", u.binary)
	spawned := time.Now()
	rctx, cancel := context.WithTimeout(ctx, u.opts.ReadyTimeout)
	defer cancel()
	child, err := handoff.Spawn(rctx, handoff.SpawnConfig{
		Binary: u.binary,
		Args:   u.opts.Args,
		Env:    os.Environ(),
		Items:  items,
		Message: handoff.Handoff{
			Generation: u.generation + 1,
			Parent:     handoff.Self(),
			Binary:     u.binary,
			Draining:   stillDraining,
		},
		State:  state,
		Logger: u.log,
	})
	if err != nil {
		return UpgradeResult{}, err
	}
	reply, err := child.WaitReady(rctx)
	if err != nil {
		child.Abort(err.Error())
		u.log.Error("upgrade failed; this generation keeps serving", "pid", child.PID, "err", err)
		return UpgradeResult{}, err
	}
	readyAfter := time.Since(spawned)

	// Decide under the lock, so that a concurrent Stop either cancels the
	// upgrade or sees it handed over, never half of each.
	u.mu.Lock()
	if u.stopped {
		u.mu.Unlock()
		child.Abort("the old generation is stopping")
		return UpgradeResult{}, fmt.Errorf("%w: this generation was stopped during the upgrade; pid %d was killed", ErrCanceled, child.PID)
	}
	u.handedOver = true
	u.mu.Unlock()
	// The control endpoint moves first so that a request arriving now is
	// queued for the new generation instead of being answered by us.
	u.stopControl()
	if err := child.Ack(); err != nil {
		// The child died between its ready and our go-ahead: keep serving.
		u.log.Error("new generation vanished before the handover; this generation keeps serving", "pid", child.PID, "err", err)
		child.Abort("go-ahead not delivered")
		u.mu.Lock()
		u.handedOver = false
		u.mu.Unlock()
		u.serveControl()
		return UpgradeResult{}, fmt.Errorf("%w: go-ahead not delivered: %v", handoff.ErrRefused, err)
	}
	ok = true
	u.handover()
	res := UpgradeResult{
		PID:        child.PID,
		Generation: u.generation + 1,
		Binary:     u.binary,
		ReadyAfter: readyAfter,
		AppStartup: reply.AppStartup,
		Took:       time.Since(start),
		Draining:   len(stillDraining) + 1,
	}
	u.log.Info("upgrade: handed over", "pid", res.PID, "generation", res.Generation,
		"ready_after", readyAfter.Round(time.Millisecond), "app_startup", reply.AppStartup.Round(time.Millisecond))
	return res, nil
}

// handover stops this generation accepting and tells the app to drain.
func (u *Upgrader) handover() {
	u.mu.Lock()
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
	if u.opts.ForceExitAfter > 0 {
		t := time.AfterFunc(u.opts.ForceExitAfter, func() {
			u.log.Error("still alive long after the handover; exiting", "after", u.opts.ForceExitAfter)
			os.Exit(3)
		})
		u.mu.Lock()
		u.forceExit = t
		u.mu.Unlock()
	}
}
