package supervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/baton-go/baton/internal/canary"
	"github.com/baton-go/baton/internal/contract"
)

// A canary release in proxy mode (baton upgrade --canary P, --steps ...):
// the new generation, once ready, takes a growing share of new traffic
// while it is judged against the stable one; promote, weight and rollback
// steer it. It runs inside the new generation's Commit, so the engine's
// upgrade is the operation under way for as long as it lasts (another
// upgrade is refused as busy) and its end is the upgrade's: promoted, the
// new generation serves alone and the stable one drains; otherwise the
// stable one serves alone and the canary is taken out and stopped.

// canaryPlanKey carries an upgrade request's plan to its generation.
type canaryPlanKey struct{}

// canaryRequest is an upgrade request's plan and how the request learns
// that the canary holds (waits for the operator) before the upgrade ends.
type canaryRequest struct {
	plan contract.CanaryPlan
	held chan contract.CanaryState // one value (buffered), when it holds
	// callOff is closed when the request goes away before the canary
	// holds (the canary is then called off); heldOnce marks the hold.
	callOff  chan struct{}
	heldOnce sync.Once
	heldNow  chan struct{}

	done   chan struct{} // closed when the upgrade has ended
	result contract.UpgradeResult
	err    error
}

// called is closed when the caller went away before the canary held.
func (r *canaryRequest) called() <-chan struct{} { return r.callOff }

func (r *canaryRequest) markHeld() { r.heldOnce.Do(func() { close(r.heldNow) }) }

func withCanary(ctx context.Context, r *canaryRequest) context.Context {
	return context.WithValue(ctx, canaryPlanKey{}, r)
}

func canaryFrom(ctx context.Context) *canaryRequest {
	r, _ := ctx.Value(canaryPlanKey{}).(*canaryRequest)
	return r
}

// CheckCanaryPlan reports what is wrong with a plan (zero thresholds and
// interval take internal/canary's defaults).
func CheckCanaryPlan(p contract.CanaryPlan) error {
	if err := canary.CheckSteps(p.Steps); err != nil {
		return err
	}
	if p.StepInterval < 0 {
		return fmt.Errorf("%w: step interval %v is negative", canary.ErrBadPlan, p.StepInterval)
	}
	return thresholds(p).Validate()
}

func thresholds(p contract.CanaryPlan) canary.Thresholds {
	return canary.Thresholds{MaxErrorRatio: p.MaxErrorRatio, MaxP99Ratio: p.MaxP99Ratio}
}

type canaryCmdKind int

const (
	cmdPromote canaryCmdKind = iota
	cmdWeight
	cmdRollback
)

type canaryCmd struct {
	kind   canaryCmdKind
	weight int
	reply  chan error
}

// canaryRun is a canary under way.
type canaryRun struct {
	f              *front
	req            *canaryRequest
	canary, stable *generation
	plan           contract.CanaryPlan
	cmds           chan canaryCmd

	mu     sync.Mutex
	step   int
	weight int
}

func (c *canaryRun) state() contract.CanaryState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return contract.CanaryState{Generation: c.canary.n, PID: c.canary.pid, Weight: c.weight, Step: c.step, Steps: c.plan.Steps}
}

// setShare gives the canary pct percent of new traffic and the stable
// generation the rest.
func (c *canaryRun) setShare(step, pct int) error {
	w := map[int]int{c.canary.n: pct}
	if c.stable != nil {
		w[c.stable.n] = 100 - pct
	}
	if err := c.f.setWeights(w); err != nil {
		return err
	}
	if pct > 0 {
		c.canary.tookTraffic.Store(true)
	}
	c.mu.Lock()
	c.step, c.weight = step, pct
	c.mu.Unlock()
	c.f.s.log.Info("canary weight", "gen", c.canary.n, "pid", c.canary.pid, "weight", pct, "step", step+1, "steps", len(c.plan.Steps))
	return nil
}

// backOut gives the stable generation all new traffic again and waits
// (bounded) for what the canary has in progress; the engine then stops it.
func (c *canaryRun) backOut() {
	if c.stable != nil {
		if err := c.f.setWeights(map[int]int{c.stable.n: 100}); err != nil {
			c.f.s.log.Error("canary: giving the stable generation all traffic back", "err", err)
		}
	}
	c.mu.Lock()
	c.weight = 0
	c.mu.Unlock()
	c.f.retire(c.canary)
}

// run steps the canary through its plan (internal/canary judges each
// step against the stable generation); nil means promoted (the engine
// completes the switch), an error that it was backed out (the stable
// generation has all new traffic again). held gets the canary's state
// when it reaches a last step below 100, where it waits for the
// operator; an operator's weight also ends the stepping.
func (c *canaryRun) run(held chan<- contract.CanaryState) (err error) {
	s := c.f.s
	defer func() {
		if err != nil {
			c.backOut()
		}
	}()
	// A last step of 100 is judged too (against the stable generation's
	// figures of the whole rollout) before the switch is final.
	steps := c.plan.Steps
	promoteAtEnd := steps[len(steps)-1] == 100
	// In the proxy at weight 0 first: known to it (figures from zero) and
	// taking nothing yet.
	if err := c.setShare(0, 0); err != nil {
		return fmt.Errorf("%w: adding the canary to the proxy: %v", contract.ErrCanceled, err)
	}
	// The rollout (internal/canary) runs in its own goroutine; its result
	// comes on rolloutDone, which is nil once it has been taken.
	rolloutDone := make(chan error, 1)
	var cancelRollout context.CancelFunc = func() {}
	defer func() { cancelRollout() }()
	if len(steps) > 0 {
		var ctx context.Context
		ctx, cancelRollout = context.WithCancel(context.Background())
		r := &canary.Rollout{
			Stable: backendID(c.stable.n), Canary: backendID(c.canary.n),
			SetShare: func(pct int) error {
				step := c.state().Step
				if i := slices.Index(steps, pct); i >= 0 {
					step = i
				}
				if err := c.setShare(step, pct); err != nil {
					return err
				}
				if pct == steps[len(steps)-1] && !promoteAtEnd {
					c.hold(&held) // the upgrade answers; the operator decides
				}
				return nil
			},
			Stats:        c.f.stats,
			Steps:        steps,
			StepInterval: c.plan.StepInterval,
			Thresholds:   thresholds(c.plan),
			Logger:       s.log.With("component", "canary", "gen", c.canary.n),
		}
		go func() {
			_, err := r.Run(ctx)
			rolloutDone <- err
		}()
	} else {
		rolloutDone <- nil
	}
	// stopRollout ends the rollout if it still runs (it leaves the weights
	// as they are) and returns how it ended: a canary that failed just
	// now must not be promoted or re-weighted by a command that came at
	// the same moment.
	stopRollout := func() error {
		if rolloutDone == nil {
			return nil
		}
		cancelRollout()
		err := <-rolloutDone
		rolloutDone = nil
		if errors.Is(err, contract.ErrCanaryFailed) {
			return err
		}
		return nil
	}
	for {
		select {
		case err := <-rolloutDone:
			rolloutDone = nil
			if err != nil {
				if !errors.Is(err, contract.ErrCanaryFailed) {
					err = fmt.Errorf("%w: the canary's rollout stopped: %v", contract.ErrCanceled, err)
				}
				return err // *canary.FailedError: contract.ErrCanaryFailed, with the figures
			}
			if promoteAtEnd {
				return c.promote()
			}
			// Holding at its last step until the operator says.
		case cmd := <-c.cmds:
			if err := stopRollout(); err != nil {
				cmd.reply <- err
				return err
			}
			switch cmd.kind {
			case cmdPromote:
				err := c.promote()
				cmd.reply <- err
				if err == nil {
					return nil
				}
			case cmdRollback:
				cmd.reply <- nil
				return fmt.Errorf("%w: %w by the operator (generation %d, pid %d, at weight %d)", contract.ErrCanceled, errCanaryRolledBack, c.canary.n, c.canary.pid, c.state().Weight)
			case cmdWeight:
				err := c.setShare(c.state().Step, cmd.weight)
				cmd.reply <- err
				if err == nil {
					c.hold(&held) // the operator steers from now on: the upgrade answers
				}
			}
		case <-c.canary.exited:
			stopRollout()
			return fmt.Errorf("%w: the canary (pid %d) exited: %v", contract.ErrCanaryFailed, c.canary.pid, c.canary.Err())
		case <-c.stableExited():
			// Better the canary alone than nobody: it is ready and serves.
			if err := stopRollout(); err != nil {
				return err
			}
			s.log.Warn("the stable generation exited during the canary: the canary takes all traffic, unjudged", "stable_pid", c.stable.pid, "canary_pid", c.canary.pid)
			return c.promote()
		case <-c.req.called():
			// The upgrade's caller went away before the canary held.
			stopRollout()
			return fmt.Errorf("%w: the upgrade request was called off before the canary held", contract.ErrCanceled)
		case <-s.halting:
			stopRollout()
			return fmt.Errorf("%w: the service is stopping", contract.ErrCanceled)
		}
	}
}

// hold tells the upgrade request, once, where the canary stands: from
// now on the operator decides.
func (c *canaryRun) hold(held *chan<- contract.CanaryState) {
	c.req.markHeld() // first: the request may end as soon as it has the answer
	if *held != nil {
		*held <- c.state()
		*held = nil
	}
}

// promote gives the canary all new traffic (the engine then drains the
// stable generation).
func (c *canaryRun) promote() error {
	if err := c.f.setWeights(map[int]int{c.canary.n: 100}); err != nil {
		return fmt.Errorf("%w: promoting the canary: %v", contract.ErrCanceled, err)
	}
	c.canary.tookTraffic.Store(true)
	c.mu.Lock()
	c.weight = 100
	c.mu.Unlock()
	c.f.s.log.Info("canary promoted", "gen", c.canary.n, "pid", c.canary.pid)
	return nil
}

func (c *canaryRun) stableExited() <-chan struct{} {
	if c.stable == nil {
		return nil
	}
	return c.stable.exited
}

// command sends cmd to the canary under way and waits for its answer.
func (c *canaryRun) command(ctx context.Context, kind canaryCmdKind, weight int) error {
	cmd := canaryCmd{kind: kind, weight: weight, reply: make(chan error, 1)}
	select {
	case c.cmds <- cmd:
	case <-c.req.done:
		return errNoCanary
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-cmd.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errNoCanary = contract.ErrNoCanary

// upgradeCanary runs an upgrade with a canary plan (proxy mode). It
// answers when the upgrade has ended (promoted, or backed out), or, for a
// plan that waits for the operator, as soon as the canary holds at its
// last step: the upgrade then goes on after the answer, until promote or
// rollback (or a failed judgement, or the canary's exit) ends it.
func (s *Supervisor) upgradeCanary(ctx context.Context, plan contract.CanaryPlan) (contract.UpgradeResult, error) {
	if s.front == nil {
		return contract.UpgradeResult{}, notInThisMode{errors.New("a canary needs proxy mode (baton run --proxy http|tcp)")}
	}
	if err := CheckCanaryPlan(plan); err != nil {
		return contract.UpgradeResult{}, badRequest{err}
	}
	req := &canaryRequest{plan: plan, held: make(chan contract.CanaryState, 1), done: make(chan struct{}),
		callOff: make(chan struct{}), heldNow: make(chan struct{})}
	// The upgrade may outlive the request (a canary that holds for the
	// operator); the request going away before the canary holds calls it
	// off: its start and readiness through the context, the canary itself
	// through callOff.
	opCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopWatch := context.AfterFunc(ctx, func() {
		select {
		case <-req.heldNow:
		default:
			close(req.callOff)
			cancel()
		}
	})
	go func() {
		defer cancel()
		req.result, req.err = s.Upgrade(withCanary(opCtx, req))
		close(req.done)
	}()
	select {
	case <-req.done:
		stopWatch()
		return req.result, req.err
	case st := <-req.held:
		stopWatch()
		return contract.UpgradeResult{PID: st.PID, Generation: st.Generation, Binary: s.cfg.Command[0], Canary: &st}, nil
	}
}

// canary is the canary under way (proxy mode), or nil.
func (s *Supervisor) canary() *canaryRun {
	if s.front == nil {
		return nil
	}
	return s.front.currentCanary()
}

// endCanary promotes or rolls back the canary under way and waits until
// its upgrade has ended: the answer describes the generation that serves
// alone then.
func (s *Supervisor) endCanary(ctx context.Context, c *canaryRun, kind canaryCmdKind, _ int) (contract.UpgradeResult, error) {
	if err := c.command(ctx, kind, 0); err != nil {
		return contract.UpgradeResult{}, err
	}
	select {
	case <-c.req.done:
	case <-ctx.Done():
		return contract.UpgradeResult{}, fmt.Errorf("%w: waiting for the canary's end", ctx.Err())
	}
	if kind == cmdPromote {
		return c.req.result, c.req.err
	}
	// Rolled back: the stable generation serves alone, its release on disk.
	s.restoreInstalled(c.stable, "")
	st := c.state() // weight 0: the canary that was stopped
	return contract.UpgradeResult{PID: c.stable.pid, Generation: c.stable.n, Binary: c.stable.binary, ReadyAfter: c.stable.readyAfter, Canary: &st}, nil
}

// steerCanary answers promote and weight.
func (s *Supervisor) steerCanary(ctx context.Context, req contract.Request) contract.Response {
	c := s.canary()
	if c == nil {
		if s.front == nil {
			return contract.ErrorResponse(notInThisMode{fmt.Errorf("%s needs proxy mode (baton run --proxy http|tcp) and a canary under way", req.Op)})
		}
		return contract.ErrorResponse(errNoCanary)
	}
	if req.Op == contract.OpPromote {
		res, err := s.endCanary(ctx, c, cmdPromote, 0)
		return contract.UpgradeResponse(res, err)
	}
	if req.Weight == nil || *req.Weight < 0 || *req.Weight > 100 {
		return contract.Response{Code: contract.CodeBadRequest, Error: "weight: want the canary's share, 0 to 100 (percent)"}
	}
	if *req.Weight == 100 {
		res, err := s.endCanary(ctx, c, cmdPromote, 0)
		return contract.UpgradeResponse(res, err)
	}
	if err := c.command(ctx, cmdWeight, *req.Weight); err != nil {
		return contract.ErrorResponse(err)
	}
	st := c.state()
	return contract.OKResponse(contract.UpgradeResult{PID: st.PID, Generation: st.Generation, Binary: c.canary.binary, Canary: &st})
}

// notInThisMode: the operation does not apply to a service in hand-off
// mode (code unsupported, without "on this platform").
type notInThisMode struct{ error }

func (e notInThisMode) Code() string { return contract.CodeUnsupported }

// badRequest carries an invalid request's error with the bad_request code.
type badRequest struct{ error }

func (e badRequest) Code() string  { return contract.CodeBadRequest }
func (e badRequest) Unwrap() error { return e.error }
