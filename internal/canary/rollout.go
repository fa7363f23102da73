package canary

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/proxy"
)

// Errors returned (wrapped) by this package; test them with errors.Is. A
// failed canary is contract.ErrCanaryFailed, as a [*FailedError].
var (
	// ErrBadPlan: invalid steps, thresholds or rollout settings (for the
	// CLI, a usage error).
	ErrBadPlan = errors.New("canary: invalid plan")
	// ErrNoStats: the figures (Rollout.Stats) lack the stable or the
	// canary backend.
	ErrNoStats = errors.New("canary: no figures for a backend")
)

// Rollout is a progressive rollout of a canary. Set the fields, then call
// Run once.
type Rollout struct {
	// Stable and Canary are the backends' IDs in the figures.
	Stable, Canary string
	// SetShare gives the canary percent (0..100) of new traffic and the
	// stable backend the rest, at once (proxy.Set.SetBackends).
	SetShare func(percent int) error
	// Stats returns the current figures by backend ID (proxy.Set.Stats).
	Stats func() map[string]proxy.BackendStats

	// Steps are the canary's successive shares, percent, increasing, in
	// (0, 100] (see ParseSteps). Every step is judged, the last one too;
	// whether a rollout that ends below 100 waits for a promote is the
	// caller's business.
	Steps []int
	// StepInterval is the length of a step (default 30s).
	StepInterval time.Duration
	Thresholds
	// EvidenceTimeout is how much longer than StepInterval a step may last
	// waiting for the canary's MinRequests (default 10 × StepInterval).
	EvidenceTimeout time.Duration
	// CheckEvery is how often the figures are looked at within a step
	// (default 100ms).
	CheckEvery time.Duration
	// Warmup: the canary's latency over the first Warmup of the first
	// step is not judged (its errors are): a fresh generation's first
	// requests pay for new connections and a cold runtime, and a healthy
	// one failed the p99 check on them (34 ms against 6.3 ms on a loaded
	// machine). Zero means DefaultWarmup; negative: none. It is at most
	// half a step.
	Warmup time.Duration

	// Logger receives one line per step (Info, Warn on failure); default
	// slog.Default().
	Logger *slog.Logger
}

// StepReport is one judged step.
type StepReport struct {
	Step    int           `json:"step"` // index in Steps
	Percent int           `json:"percent"`
	Started time.Time     `json:"started"`
	Took    time.Duration `json:"took_ns"`
	Verdict Verdict       `json:"verdict"`
}

// Report lists the judged steps in order: all of them after a success;
// after a failure, those that passed and then the one that failed.
type Report struct {
	Steps []StepReport `json:"steps"`
}

// FailedError is a failed canary: the step that failed, after which the
// canary's share was set back to 0. It matches contract.ErrCanaryFailed
// with errors.Is.
type FailedError struct {
	StepReport
	Steps int // the number of steps of the plan
	// RollbackErr: setting the canary's share back to 0 failed (it may
	// still take traffic); nil when it succeeded.
	RollbackErr error
}

func (e *FailedError) Error() string {
	msg := fmt.Sprintf("canary failed at step %d of %d (%d%%) after %v: %v", e.Step+1, e.Steps, e.Percent, roundDur(e.Took), e.Verdict)
	if e.RollbackErr != nil {
		return msg + "; setting its share back to 0% failed: " + e.RollbackErr.Error()
	}
	return msg + "; its share is back to 0%"
}

// Unwrap returns contract.ErrCanaryFailed and RollbackErr, if any.
func (e *FailedError) Unwrap() []error {
	if e.RollbackErr != nil {
		return []error{contract.ErrCanaryFailed, e.RollbackErr}
	}
	return []error{contract.ErrCanaryFailed}
}

// Run runs the steps: for each, it sets the canary's share, lets traffic
// flow for StepInterval and judges the canary over the step (see the
// package documentation), going on while it passes. It returns the report
// of every step and nil when all passed, with the canary at the last
// step's share.
//
// At the first step the canary fails (at the latest at the step's end,
// earlier on clear evidence) Run sets its share to 0 at once and returns a
// *FailedError. When ctx is done it returns ctx's error (wrapped) at once
// and leaves the weights as they are, for whoever interrupted to set. An
// error setting a share or reading the figures (ErrNoStats) also ends the
// rollout with the weights as they are. Invalid settings are ErrBadPlan.
func (r *Rollout) Run(ctx context.Context) (Report, error) {
	var rep Report
	if err := r.validate(); err != nil {
		return rep, err
	}
	log := r.Logger
	if log == nil {
		log = slog.Default()
	}
	first, err := r.snapshot()
	if err != nil {
		return rep, err
	}
	for i, pct := range r.Steps {
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("canary: interrupted before step %d (%d%%): %w", i+1, pct, err)
		}
		if err := r.SetShare(pct); err != nil {
			return rep, fmt.Errorf("canary: step %d: setting the canary's share to %d%%: %w", i+1, pct, err)
		}
		sr, err := r.step(ctx, i, pct, first)
		if err != nil {
			return rep, err
		}
		rep.Steps = append(rep.Steps, sr)
		if sr.Verdict.Result == Pass {
			log.Info("canary step passed", "canary", r.Canary, "step", i+1, "of", len(r.Steps), "percent", pct, "verdict", sr.Verdict.String())
			continue
		}
		fe := &FailedError{StepReport: sr, Steps: len(r.Steps), RollbackErr: r.SetShare(0)}
		log.Warn("canary failed; share set back to 0", "canary", r.Canary, "step", i+1, "of", len(r.Steps), "percent", pct,
			"verdict", sr.Verdict.String(), "rollback_error", fe.RollbackErr)
		return rep, fe
	}
	return rep, nil
}

// pair is one snapshot of the two backends' cumulative figures.
type pair struct{ canary, stable proxy.BackendStats }

func (r *Rollout) snapshot() (pair, error) {
	m := r.Stats()
	c, ok := m[r.Canary]
	if !ok {
		return pair{}, fmt.Errorf("%w: canary %q", ErrNoStats, r.Canary)
	}
	s, ok := m[r.Stable]
	if !ok {
		return pair{}, fmt.Errorf("%w: stable %q", ErrNoStats, r.Stable)
	}
	return pair{c, s}, nil
}

// step lets step i run and returns its report once it is judged (Pass or
// Fail); an error only when ctx is done or the figures are missing.
func (r *Rollout) step(ctx context.Context, i, pct int, first pair) (StepReport, error) {
	th := r.Thresholds.withDefaults()
	interval := cmp.Or(r.StepInterval, DefaultStepInterval)
	giveUp := interval + cmp.Or(r.EvidenceTimeout, DefaultEvidenceFactor*interval)
	start, err := r.snapshot()
	if err != nil {
		return StepReport{}, err
	}
	sr := StepReport{Step: i, Percent: pct, Started: time.Now()}
	// The canary's latency counts from latFrom on: the step's start, or,
	// in the first step, the last look (prev) before its warm-up ended at
	// warmEnd (never a later one: at a look that is also the step's end,
	// nothing would be left to judge). The step's end ends the warm-up.
	latFrom, prev, warming, warmEnd := start, start, false, time.Time{}
	if w := min(cmp.Or(r.Warmup, DefaultWarmup), interval/2); i == 0 && w > 0 {
		warming, warmEnd = true, sr.Started.Add(w)
	}
	end := time.NewTimer(interval)
	defer end.Stop()
	tick := time.NewTicker(cmp.Or(r.CheckEvery, DefaultCheckEvery))
	defer tick.Stop()
	ended := false
	for {
		select {
		case <-ctx.Done():
			return StepReport{}, fmt.Errorf("canary: interrupted in step %d (%d%%): %w", i+1, pct, ctx.Err())
		case <-end.C:
			ended = true
		case <-tick.C:
		}
		cur, err := r.snapshot()
		if err != nil {
			return StepReport{}, err
		}
		sr.Took = time.Since(sr.Started)
		c := cur.canary.Sub(start.canary)
		if warming && (ended || !time.Now().Before(warmEnd)) {
			latFrom, warming = prev, false
		}
		if warming {
			c.Latency = proxy.Histogram{} // nothing to judge on latency yet
		} else {
			c.Latency = cur.canary.Latency.Sub(latFrom.canary.Latency)
		}
		prev = cur
		s, baseline := cur.stable.Sub(start.stable), BaselineStep
		if s.Requests+s.ConnErrors < th.MinRequests {
			s, baseline = cur.stable.Sub(first.stable), BaselineRollout
		}
		if ended {
			if sr.Verdict = judge(c, s, baseline, th); sr.Verdict.Result != Undecided {
				return sr, nil
			}
		}
		if v, failed := clearFailure(c, s, baseline, th); failed {
			sr.Verdict = v
			return sr, nil
		}
		if ended && sr.Took >= giveUp {
			sr.Verdict.Result = Fail // Check is CheckMinRequests
			return sr, nil
		}
	}
}

func (r *Rollout) validate() error {
	switch {
	case r.Stable == "" || r.Canary == "":
		return fmt.Errorf("%w: the stable and the canary backend need IDs", ErrBadPlan)
	case r.Stable == r.Canary:
		return fmt.Errorf("%w: stable and canary are the same backend %q", ErrBadPlan, r.Stable)
	case r.SetShare == nil || r.Stats == nil:
		return fmt.Errorf("%w: SetShare and Stats are needed", ErrBadPlan)
	case r.StepInterval < 0 || r.EvidenceTimeout < 0 || r.CheckEvery < 0:
		return fmt.Errorf("%w: negative step interval, evidence timeout or check period", ErrBadPlan)
	}
	if err := CheckSteps(r.Steps); err != nil {
		return err
	}
	return r.Thresholds.Validate()
}
