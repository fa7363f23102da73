package canary

import (
	"fmt"
	"math"
	"time"

	"github.com/baton-go/baton/internal/proxy"
)

// Defaults for zero Thresholds and Rollout fields.
const (
	DefaultMaxErrorRatio = 0.01 // one request in a hundred more may fail
	DefaultMaxP99Ratio   = 1.5
	DefaultMinP99        = 10 * time.Millisecond
	DefaultMinRequests   = 100 // below ~100 answers a p99 is just the slowest one
	DefaultStepInterval  = 30 * time.Second
	DefaultWarmup        = 500 * time.Millisecond // Rollout.Warmup
	DefaultCheckEvery    = 100 * time.Millisecond
	// DefaultEvidenceFactor: EvidenceTimeout is by default this many
	// StepIntervals.
	DefaultEvidenceFactor = 10

	earlyMinRequests = 10 // early checks need at least min(this, MinRequests)
	earlyZ           = 3.0
	p99Fraction      = 0.01
	p99Quantile      = 1 - p99Fraction
)

// Baselines (Verdict.Baseline).
const (
	BaselineStep    = "step"    // the stable generation's figures over the step
	BaselineRollout = "rollout" // its figures since the rollout began
	BaselineNone    = "none"    // too few requests even then: no comparison
)

// Names of the checks (Verdict.Check).
const (
	CheckMinRequests = "min_requests"
	CheckErrorRatio  = "error_ratio"
	CheckP99         = "p99"
)

// Thresholds are the bounds a canary must keep. Zero fields take the
// defaults (so, as on the wire, 0 means "the default"; to allow no excess
// of errors at all give a tiny MaxErrorRatio such as 1e-9).
type Thresholds struct {
	// MaxErrorRatio: the canary's error ratio may exceed the baseline's by
	// this much, absolute (0.01 = one percentage point). In [0, 1).
	MaxErrorRatio float64
	// MaxP99Ratio: the canary's p99 may be this many times the
	// baseline's. At least 1.
	MaxP99Ratio float64
	// MinP99: a canary p99 at or below this never fails the p99 check.
	MinP99 time.Duration
	// MinRequests: the canary's answers (and connection errors) needed to
	// judge a step; the stable generation's needed to be a baseline.
	MinRequests int64
}

// Validate reports a threshold out of range (wrapping ErrBadPlan).
func (th Thresholds) Validate() error {
	switch {
	case math.IsNaN(th.MaxErrorRatio) || th.MaxErrorRatio < 0 || th.MaxErrorRatio >= 1:
		return fmt.Errorf("%w: max error ratio %v: want a fraction in [0, 1), such as 0.01", ErrBadPlan, th.MaxErrorRatio)
	case math.IsNaN(th.MaxP99Ratio) || math.IsInf(th.MaxP99Ratio, 0) || th.MaxP99Ratio < 0 || (th.MaxP99Ratio > 0 && th.MaxP99Ratio < 1):
		return fmt.Errorf("%w: max p99 ratio %v: want at least 1, such as 1.5 (0: the default)", ErrBadPlan, th.MaxP99Ratio)
	case th.MinP99 < 0:
		return fmt.Errorf("%w: min p99 %v is negative", ErrBadPlan, th.MinP99)
	case th.MinRequests < 0:
		return fmt.Errorf("%w: min requests %d is negative", ErrBadPlan, th.MinRequests)
	}
	return nil
}

func (th Thresholds) withDefaults() Thresholds {
	if th.MaxErrorRatio == 0 {
		th.MaxErrorRatio = DefaultMaxErrorRatio
	}
	if th.MaxP99Ratio == 0 {
		th.MaxP99Ratio = DefaultMaxP99Ratio
	}
	if th.MinP99 == 0 {
		th.MinP99 = DefaultMinP99
	}
	if th.MinRequests == 0 {
		th.MinRequests = DefaultMinRequests
	}
	return th
}

// Figures are one backend's figures over a step.
type Figures struct {
	Requests   int64         `json:"requests"`    // answers and connection errors
	Errors     int64         `json:"errors"`      // 5xx answers and connection errors
	ErrorRatio float64       `json:"error_ratio"` // Errors / Requests; 0 without requests
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
}

func figuresOf(s proxy.BackendStats) Figures {
	return Figures{
		Requests:   s.Requests + s.ConnErrors,
		Errors:     s.Errors5xx + s.ConnErrors,
		ErrorRatio: s.ErrorRatio(),
		P50:        s.Latency.Quantile(0.50),
		P99:        s.Latency.Quantile(p99Quantile),
	}
}

// Result is a verdict's outcome.
type Result string

// Outcomes of a judgement.
const (
	Pass      Result = "pass"
	Fail      Result = "fail"
	Undecided Result = "undecided" // too few canary requests (Check is CheckMinRequests)
)

// Verdict is one comparison of the canary with the stable generation.
type Verdict struct {
	Result Result `json:"result"`
	// Check is the check that failed (CheckErrorRatio, CheckP99,
	// CheckMinRequests), or CheckMinRequests when undecided; "" on a pass.
	Check  string  `json:"check,omitempty"`
	Canary Figures `json:"canary"`
	Stable Figures `json:"stable"`
	// Baseline says which stable figures were compared: "step" (the
	// step's), "rollout" (since the rollout began, the stable generation
	// having had too few requests in the step) or "none".
	Baseline string `json:"baseline"`
	// MaxErrorRatio is the canary's highest passing error ratio (the
	// baseline's plus the allowed excess).
	MaxErrorRatio float64 `json:"max_error_ratio"`
	// MaxP99 is the canary's highest passing p99; 0 when the p99 check was
	// skipped (no baseline).
	MaxP99      time.Duration `json:"max_p99_ns"`
	MinRequests int64         `json:"min_requests"`
	// Early: the step was cut short on clear evidence (confidence bounds),
	// before its end.
	Early bool `json:"early,omitempty"`
}

// String tells the verdict in one line, with the figures.
func (v Verdict) String() string {
	c, s := v.Canary, v.Stable
	what := string(v.Result)
	if v.Check != "" {
		what += " (" + v.Check + ")"
	}
	if v.Early {
		what += " early"
	}
	p99 := "p99 not compared (no baseline)"
	if v.MaxP99 > 0 {
		p99 = fmt.Sprintf("p99 %v vs stable %v (max %v)", roundDur(c.P99), roundDur(s.P99), roundDur(v.MaxP99))
	}
	return fmt.Sprintf("%s: canary %d requests, %d errors (%.2f%%) vs stable %d requests, %d errors (%.2f%%, %s) (max %.2f%%, at least %d requests); %s",
		what, c.Requests, c.Errors, 100*c.ErrorRatio, s.Requests, s.Errors, 100*s.ErrorRatio, v.Baseline,
		100*v.MaxErrorRatio, v.MinRequests, p99)
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= 10*time.Microsecond:
		return d.Round(time.Microsecond)
	}
	return d
}

// Judge compares the canary's figures with the stable generation's, both
// over the same span (a step: the Sub of two snapshots), by the rules of
// the package documentation. A stable generation with fewer than
// MinRequests is no baseline (Baseline "none"); a rollout picks the
// stable figures itself (see Rollout). Invalid thresholds are taken as
// they are: validate them first.
func Judge(canary, stable proxy.BackendStats, th Thresholds) Verdict {
	return judge(canary, stable, BaselineStep, th.withDefaults())
}

// judge is Judge with the baseline's name and thresholds with defaults.
func judge(canary, stable proxy.BackendStats, baseline string, th Thresholds) Verdict {
	v := limits(canary, stable, baseline, th)
	switch {
	case v.Canary.Requests < th.MinRequests:
		v.Result, v.Check = Undecided, CheckMinRequests
	case v.Canary.ErrorRatio > v.MaxErrorRatio:
		v.Result, v.Check = Fail, CheckErrorRatio
	case v.MaxP99 > 0 && v.Canary.P99 > v.MaxP99:
		v.Result, v.Check = Fail, CheckP99
	default:
		v.Result = Pass
	}
	return v
}

// limits fills a verdict's figures and bounds, without judging.
func limits(canary, stable proxy.BackendStats, baseline string, th Thresholds) Verdict {
	v := Verdict{Canary: figuresOf(canary), Stable: figuresOf(stable), Baseline: baseline, MinRequests: th.MinRequests}
	if v.Stable.Requests < th.MinRequests {
		v.Baseline = BaselineNone
		v.MaxErrorRatio = th.MaxErrorRatio
		return v
	}
	v.MaxErrorRatio = v.Stable.ErrorRatio + th.MaxErrorRatio
	v.MaxP99 = max(time.Duration(th.MaxP99Ratio*float64(v.Stable.P99)), th.MinP99)
	return v
}

// clearFailure is the check within a step: a failing verdict (Early) when
// the confidence bounds leave no doubt, else ok false.
func clearFailure(canary, stable proxy.BackendStats, baseline string, th Thresholds) (Verdict, bool) {
	v := limits(canary, stable, baseline, th)
	n := v.Canary.Requests
	if n < min(earlyMinRequests, th.MinRequests) {
		return v, false
	}
	v.Result, v.Early = Fail, true
	stableHigh := 0.0
	if v.Baseline != BaselineNone {
		stableHigh = wilson(v.Stable.Errors, v.Stable.Requests, earlyZ, +1)
	}
	if wilson(v.Canary.Errors, n, earlyZ, -1)-stableHigh > th.MaxErrorRatio {
		v.Check = CheckErrorRatio
		return v, true
	}
	if v.MaxP99 > 0 {
		slow := countAbove(canary.Latency, v.MaxP99)
		if wilson(slow, canary.Latency.Count(), earlyZ, -1) > p99Fraction {
			v.Check = CheckP99
			return v, true
		}
	}
	return v, false
}

// wilson is the Wilson score bound (sign -1: lower, +1: upper) of the
// proportion k/n at z standard deviations: unlike the normal
// approximation it stays within [0, 1] and is sound for small n and
// proportions near 0, which is where canaries are judged.
func wilson[N int64 | uint64](k, n N, z float64, sign float64) float64 {
	if n == 0 {
		return max(sign, 0) // no data: [0, 1]
	}
	fn := float64(n)
	p := float64(k) / fn
	z2 := z * z
	centre := p + z2/(2*fn)
	spread := z * math.Sqrt(p*(1-p)/fn+z2/(4*fn*fn))
	return min(max((centre+sign*spread)/(1+z2/fn), 0), 1)
}

// countAbove is the number of durations in h above d (at the histogram's
// resolution: those whose bucket's upper bound is above d), found by
// bisecting the ranks with Quantile.
func countAbove(h proxy.Histogram, d time.Duration) uint64 {
	n := h.Count()
	atRank := func(r uint64) time.Duration {
		// Quantile takes the rank ceil(q·n); half a rank below r keeps
		// float rounding from landing on r+1.
		return h.Quantile((float64(r) - 0.5) / float64(n))
	}
	lo, hi := uint64(1), n+1 // the first rank above d is in [lo, hi]
	for lo < hi {
		mid := lo + (hi-lo)/2
		if atRank(mid) > d {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return n + 1 - lo
}
