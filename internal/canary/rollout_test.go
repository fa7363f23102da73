package canary_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/canary"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proxy"
)

// testThresholds are loose on latency: the tests run on a loaded 2-core
// machine, often under -race, where a scheduling stall can delay a few
// requests of a healthy backend by tens of milliseconds. The slow canary
// is slower than MinP99 by a wide margin instead.
var testThresholds = canary.Thresholds{
	MaxErrorRatio: 0.05,
	MaxP99Ratio:   1.5,
	MinP99:        200 * time.Millisecond,
	MinRequests:   20,
}

// rig is a stable and a canary HTTP backend on loopback behind a real
// proxy.HTTPProxy, the canary at weight 0.
type rig struct {
	set  *proxy.Set
	addr string // the proxy's
	be   [2]proxy.Backend
	// shares records every share the rollout set, in order.
	shares chan int
}

func newRig(t *testing.T, canaryHandler http.HandlerFunc) *rig {
	t.Helper()
	ok := func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") }
	if canaryHandler == nil {
		canaryHandler = ok
	}
	r := &rig{set: proxy.NewSet(proxy.SetOptions{}), shares: make(chan int, 16)}
	for i, h := range []http.HandlerFunc{ok, canaryHandler} {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		r.be[i] = proxy.Backend{ID: []string{"stable", "canary"}[i], Network: "tcp", Addr: srv.Listener.Addr().String()}
	}
	if err := r.setShare(0); err != nil {
		t.Fatal(err)
	}
	<-r.shares
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := proxy.NewHTTP(r.set, proxy.HTTPOptions{Logger: slog.New(slog.DiscardHandler)})
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("proxy shutdown: %v", err)
		}
		<-served
	})
	r.addr = ln.Addr().String()
	return r
}

// setShare is what the supervisor does: stable 100-p, canary p.
func (r *rig) setShare(p int) error {
	bs := r.be
	bs[0].Weight, bs[1].Weight = 100-p, p
	err := r.set.SetBackends(bs[:])
	if err == nil {
		r.shares <- p
	}
	return err
}

func (r *rig) rollout(steps ...int) *canary.Rollout {
	return &canary.Rollout{
		Stable: "stable", Canary: "canary",
		SetShare: r.setShare, Stats: r.set.Stats,
		Steps: steps, StepInterval: 300 * time.Millisecond,
		Thresholds:      testThresholds,
		EvidenceTimeout: time.Minute, // a slow machine extends a step; it must not fail it
		Logger:          slog.New(slog.DiscardHandler),
	}
}

// load sends keep-alive GETs through the proxy until the test ends
// (bounded); stop ends it and returns the report.
func (r *rig) load(t *testing.T) (stop func() loadgen.Report) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	l, err := loadgen.Start(ctx, loadgen.Config{Addr: r.addr, Workers: map[loadgen.Kind]int{loadgen.KeepAliveGET: 4}, MaxRequests: 200_000})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var rep *loadgen.Report
	stop = func() loadgen.Report {
		if rep == nil {
			r := l.Stop()
			rep = &r
			cancel()
		}
		return *rep
	}
	t.Cleanup(func() { stop() })
	return stop
}

// weights are the Set's current weights, read from Stats: Set.Backends
// copies the round-robin state without its lock (a data race with requests
// in flight).
func (r *rig) weights() map[string]int {
	m := map[string]int{}
	for id, b := range r.set.Stats() {
		m[id] = b.Weight
	}
	return m
}

func run(t *testing.T, ro *canary.Rollout) (canary.Report, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return ro.Run(ctx)
}

func TestHealthyCanaryPassesEveryStep(t *testing.T) {
	r := newRig(t, nil)
	stop := r.load(t)
	rep, err := run(t, r.rollout(10, 50, 100))
	lr := stop()
	if err != nil {
		t.Fatalf("healthy canary: %v", err)
	}
	if len(rep.Steps) != 3 {
		t.Fatalf("%d steps reported, want 3", len(rep.Steps))
	}
	for _, s := range rep.Steps {
		t.Logf("step %d (%d%%) after %v: %v", s.Step+1, s.Percent, s.Took, s.Verdict)
		if s.Verdict.Result != canary.Pass || s.Verdict.Canary.Requests < testThresholds.MinRequests {
			t.Errorf("step %d: %v", s.Step+1, s.Verdict)
		}
	}
	// At 100% the stable generation gets nothing in the step: it is
	// compared with the stable's figures since the rollout began.
	if b := rep.Steps[0].Verdict.Baseline; b != canary.BaselineStep {
		t.Errorf("step 1 baseline %q, want %q", b, canary.BaselineStep)
	}
	if b := rep.Steps[2].Verdict.Baseline; b != canary.BaselineRollout {
		t.Errorf("step 3 baseline %q, want %q", b, canary.BaselineRollout)
	}
	if w := r.weights(); w["canary"] != 100 || w["stable"] != 0 {
		t.Errorf("weights after the rollout: %v", w)
	}
	if lr.TotalFailed() != 0 {
		t.Errorf("%d requests failed: %v", lr.TotalFailed(), lr)
	}
}

func TestFailingCanaryIsRolledBackInTheFirstStep(t *testing.T) {
	var n atomic.Int64
	r := newRig(t, func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1)%2 == 0 {
			http.Error(w, "broken release", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	stop := r.load(t)
	const first = 5
	rep, err := run(t, r.rollout(first, 50, 100))
	if w := r.weights(); w["canary"] != 0 || w["stable"] != 100 {
		t.Errorf("weights right after the failure: %v", w)
	}
	lr := stop()
	t.Logf("error: %v", err)
	var fe *canary.FailedError
	if !errors.Is(err, contract.ErrCanaryFailed) || !errors.As(err, &fe) {
		t.Fatalf("Run returned %v, want a canary failure", err)
	}
	if c := contract.CodeOf(err); c != contract.CodeCanaryFailed || contract.ExitCode(c) != contract.ExitFailed {
		t.Errorf("code %q, exit code %d", c, contract.ExitCode(c))
	}
	if fe.Step != 0 || fe.Percent != first || fe.Verdict.Check != canary.CheckErrorRatio || fe.RollbackErr != nil {
		t.Errorf("failure: step %d at %d%%, check %q, rollback error %v", fe.Step, fe.Percent, fe.Verdict.Check, fe.RollbackErr)
	}
	if len(rep.Steps) != 1 || rep.Steps[0].Verdict.Result != canary.Fail {
		t.Errorf("report: %+v", rep)
	}

	// The canary saw no more than its weight allows. Smooth weighted
	// round robin keeps each backend within one pick of its exact share
	// over every run of picks, and the canary had weight only while its
	// 5% table was in place, so it answered at most 5% of all requests
	// (those before and after that table only lower its share) plus one.
	st := r.set.Stats()
	c, s := st["canary"], st["stable"]
	total := c.Requests + c.ConnErrors + s.Requests + s.ConnErrors
	t.Logf("canary answered %d of %d requests (%d errors); clients saw %d failures", c.Requests, total, c.Errors5xx, lr.TotalFailed())
	if limit := total*first/100 + 1; c.Requests+c.ConnErrors > limit {
		t.Errorf("canary answered %d of %d requests, more than %d%% (+1): %d", c.Requests, total, first, limit)
	}
	// Every failure a client saw is one of the canary's 500s: the
	// roll-back itself failed nothing.
	if lr.TotalFailed() != c.Errors5xx {
		t.Errorf("clients saw %d failures, the canary answered %d errors: %v", lr.TotalFailed(), c.Errors5xx, lr)
	}
}

func TestSlowCanaryFailsTheP99Check(t *testing.T) {
	r := newRig(t, func(w http.ResponseWriter, req *http.Request) {
		// The release's own latency, well above MinP99.
		select {
		case <-time.After(3 * testThresholds.MinP99):
		case <-req.Context().Done():
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	stop := r.load(t)
	_, err := run(t, r.rollout(10, 50, 100))
	stop()
	var fe *canary.FailedError
	if !errors.As(err, &fe) {
		t.Fatalf("Run returned %v, want a canary failure", err)
	}
	t.Logf("error: %v", err)
	if fe.Step != 0 || fe.Verdict.Check != canary.CheckP99 {
		t.Errorf("failed step %d on %q, want step 1 on p99", fe.Step+1, fe.Verdict.Check)
	}
	if fe.Verdict.Canary.P99 <= fe.Verdict.MaxP99 {
		t.Errorf("canary p99 %v within its limit %v", fe.Verdict.Canary.P99, fe.Verdict.MaxP99)
	}
	if w := r.weights(); w["canary"] != 0 {
		t.Errorf("weights after the failure: %v", w)
	}
}

// TestColdCanaryStartIsNotJudgedOnLatency: a healthy canary whose first
// requests are slow (a fresh process: new connections, a cold runtime) is
// not failed on them: the first step's warm-up is not judged on latency.
// Without the warm-up the same canary fails the p99 check.
func TestColdCanaryStartIsNotJudgedOnLatency(t *testing.T) {
	coldRollout := func(warmup time.Duration) (*rig, *canary.Rollout) {
		var n atomic.Int64
		r := newRig(t, func(w http.ResponseWriter, req *http.Request) {
			if n.Add(1) <= 4 { // the first requests: slower than MinP99
				select {
				case <-time.After(testThresholds.MinP99 + 50*time.Millisecond):
				case <-req.Context().Done():
				}
			}
			_, _ = io.WriteString(w, "ok\n")
		})
		ro := r.rollout(50)
		ro.StepInterval, ro.Warmup = 2*time.Second, warmup
		return r, ro
	}

	r, ro := coldRollout(time.Second)
	stop := r.load(t)
	rep, err := run(t, ro)
	stop()
	if err != nil {
		t.Fatalf("a canary slow only at its start, with a 1s warm-up: %v", err)
	}
	t.Logf("with the warm-up: %v", rep.Steps[0].Verdict)

	r, ro = coldRollout(-1)
	stop = r.load(t)
	_, err = run(t, ro)
	stop()
	var fe *canary.FailedError
	if !errors.As(err, &fe) || fe.Verdict.Check != canary.CheckP99 {
		t.Fatalf("the same canary without a warm-up: %v; want a p99 failure (else this test proves nothing)", err)
	}
	t.Logf("without: %v", err)
}

// TestWarmupNeverHidesASlowCanary: the warm-up ends at the step's end at
// the latest and latency counts from the last look before it ended, so a
// canary slow on every request fails the p99 check even when the only
// look is at the step's end (CheckEvery = StepInterval). It passed, with
// p99 0, when the warm-up's end counted from the look at the step's end.
func TestWarmupNeverHidesASlowCanary(t *testing.T) {
	r := newRig(t, func(w http.ResponseWriter, req *http.Request) {
		select {
		case <-time.After(40 * time.Millisecond):
		case <-req.Context().Done():
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	ro := r.rollout(50)
	ro.Thresholds = canary.Thresholds{MaxErrorRatio: 0.05, MaxP99Ratio: 1.5, MinP99: 10 * time.Millisecond, MinRequests: 10}
	ro.StepInterval, ro.CheckEvery = 400*time.Millisecond, 400*time.Millisecond // Warmup: the default
	stop := r.load(t)
	_, err := run(t, ro)
	stop()
	var fe *canary.FailedError
	if !errors.As(err, &fe) || fe.Verdict.Check != canary.CheckP99 {
		t.Fatalf("a canary 40 ms slow on every request, judged at its step's end: %v; want a p99 failure", err)
	}
	t.Logf("%v", err)
}

// An operator's command interrupts a rollout: Run returns the context's
// error and leaves the weights for the command to set.
func TestCancelLeavesTheWeights(t *testing.T) {
	r := newRig(t, nil)
	ro := r.rollout(10, 100)
	ro.StepInterval = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := ro.Run(ctx)
		done <- err
	}()
	if p := <-r.shares; p != 10 {
		t.Fatalf("first share %d%%, want 10%%", p)
	}
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || errors.Is(err, contract.ErrCanaryFailed) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
	if w := r.weights(); w["canary"] != 10 || w["stable"] != 90 {
		t.Errorf("weights after the interruption: %v, want them left at 90/10", w)
	}
	select {
	case p := <-r.shares:
		t.Errorf("the share was set to %d%% after the interruption", p)
	default:
	}
}

// A canary nobody uses cannot be judged: it is not promoted.
func TestCanaryWithoutTrafficIsNotPromoted(t *testing.T) {
	r := newRig(t, nil)
	ro := r.rollout(10, 100)
	ro.StepInterval, ro.EvidenceTimeout = 100*time.Millisecond, 100*time.Millisecond
	_, err := run(t, ro)
	var fe *canary.FailedError
	if !errors.As(err, &fe) || fe.Verdict.Check != canary.CheckMinRequests || fe.Verdict.Result != canary.Fail {
		t.Fatalf("Run returned %v, want a failure for too few requests", err)
	}
	if w := r.weights(); w["canary"] != 0 {
		t.Errorf("weights: %v", w)
	}
}

func TestRunRefusesBadPlans(t *testing.T) {
	r := newRig(t, nil)
	for name, change := range map[string]func(*canary.Rollout){
		"same backend":  func(ro *canary.Rollout) { ro.Canary = ro.Stable },
		"no steps":      func(ro *canary.Rollout) { ro.Steps = nil },
		"falling steps": func(ro *canary.Rollout) { ro.Steps = []int{50, 10} },
		"bad ratio":     func(ro *canary.Rollout) { ro.MaxP99Ratio = 0.5 },
		"no stats":      func(ro *canary.Rollout) { ro.Stats = nil },
	} {
		ro := r.rollout(10, 100)
		change(ro)
		if _, err := run(t, ro); !errors.Is(err, canary.ErrBadPlan) {
			t.Errorf("%s: %v, want ErrBadPlan", name, err)
		}
	}
	ro := r.rollout(10, 100)
	ro.Canary = "gen-9"
	if _, err := run(t, ro); !errors.Is(err, canary.ErrNoStats) {
		t.Errorf("unknown canary: %v, want ErrNoStats", err)
	}
	select {
	case p := <-r.shares:
		t.Errorf("a refused plan set the share to %d%%", p)
	default:
	}
}
