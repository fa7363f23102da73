package canary

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/proxy"
)

// figures builds a backend's figures: n answers of which e5xx are 5xx,
// connErr connection errors, and latencies: slow of them take slowLat,
// the rest fastLat.
func figures(n, e5xx, connErr, slow int64, fastLat, slowLat time.Duration) proxy.BackendStats {
	s := proxy.BackendStats{Requests: n, Errors5xx: e5xx, ConnErrors: connErr}
	for i := range n {
		if i < slow {
			s.Latency.Add(slowLat)
		} else {
			s.Latency.Add(fastLat)
		}
	}
	return s
}

func TestJudge(t *testing.T) {
	ms := time.Millisecond
	stable := figures(10_000, 50, 0, 0, 20*ms, 0) // 0.5% errors, p99 ≈ 20ms
	th := Thresholds{MaxErrorRatio: 0.01, MaxP99Ratio: 1.5, MinP99: 10 * ms, MinRequests: 100}
	cases := []struct {
		name          string
		canary        proxy.BackendStats
		stable        proxy.BackendStats
		result        Result
		check         string
		baselineNoP99 bool
	}{
		{"like the stable", figures(500, 2, 0, 0, 20*ms, 0), stable, Pass, "", false},
		{"too few", figures(99, 99, 0, 0, 20*ms, 0), stable, Undecided, CheckMinRequests, false},
		{"errors within the excess", figures(1000, 14, 0, 0, 20*ms, 0), stable, Pass, "", false},
		{"errors beyond the excess", figures(1000, 16, 0, 0, 20*ms, 0), stable, Fail, CheckErrorRatio, false},
		{"connection errors count", figures(990, 0, 20, 0, 20*ms, 0), stable, Fail, CheckErrorRatio, false},
		{"p99 within the ratio", figures(1000, 0, 0, 10, 20*ms, 29*ms), stable, Pass, "", false},
		{"p99 beyond the ratio", figures(1000, 0, 0, 20, 20*ms, 40*ms), stable, Fail, CheckP99, false},
		{"below the floor", figures(1000, 0, 0, 20, 200*time.Microsecond, 9*ms), figures(1000, 0, 0, 0, 100*time.Microsecond, 0), Pass, "", false},
		{"errors first", figures(1000, 500, 0, 500, 20*ms, time.Second), stable, Fail, CheckErrorRatio, false},
		// A stable generation with too few requests is no baseline: 0
		// errors expected, no p99 comparison.
		{"no baseline, slow", figures(1000, 5, 0, 500, 20*ms, time.Second), figures(10, 5, 0, 0, ms, 0), Pass, "", true},
		{"no baseline, errors", figures(1000, 20, 0, 0, 20*ms, 0), figures(10, 0, 0, 0, ms, 0), Fail, CheckErrorRatio, true},
	}
	for _, c := range cases {
		v := Judge(c.canary, c.stable, th)
		if v.Result != c.result || v.Check != c.check || (v.MaxP99 == 0) != c.baselineNoP99 || (v.Baseline == BaselineNone) != c.baselineNoP99 {
			t.Errorf("%s: %v", c.name, v)
		}
	}
}

func TestJudgeDefaults(t *testing.T) {
	v := Judge(figures(100, 0, 0, 0, 20*time.Millisecond, 0), figures(1000, 0, 0, 0, 20*time.Millisecond, 0), Thresholds{})
	if v.Result != Pass || v.MinRequests != DefaultMinRequests || v.MaxErrorRatio != DefaultMaxErrorRatio {
		t.Errorf("%v", v)
	}
	if want := time.Duration(DefaultMaxP99Ratio * float64(v.Stable.P99)); v.MaxP99 != want {
		t.Errorf("max p99 %v, want %v", v.MaxP99, want)
	}
	for _, want := range []string{"pass: canary 100 requests, 0 errors (0.00%)", "p99 21ms vs stable 21ms (max 31ms)"} {
		if !strings.Contains(v.String(), want) {
			t.Errorf("%q lacks %q", v, want)
		}
	}
}

// Within a step a canary fails only on clear evidence.
func TestClearFailure(t *testing.T) {
	ms := time.Millisecond
	stable := figures(2000, 0, 0, 0, 5*ms, 0)
	th := Thresholds{MaxErrorRatio: 0.05, MaxP99Ratio: 1.5, MinP99: 10 * ms, MinRequests: 100}.withDefaults()
	cases := []struct {
		name   string
		canary proxy.BackendStats
		check  string // "" : no clear failure yet
	}{
		{"half failing, 9 requests", figures(9, 5, 0, 0, ms, 0), ""},
		{"half failing, 10 requests", figures(10, 5, 0, 0, ms, 0), CheckErrorRatio},
		{"10% failing, 20 requests", figures(20, 2, 0, 0, ms, 0), ""},
		{"10% failing, 2000 requests", figures(2000, 200, 0, 0, ms, 0), CheckErrorRatio},
		{"all slow, 10 requests", figures(10, 0, 0, 10, ms, 100*ms), CheckP99},
		{"3% slow, 100 requests", figures(100, 0, 0, 3, ms, 100*ms), ""},
		{"3% slow, 5000 requests", figures(5000, 0, 0, 150, ms, 100*ms), CheckP99},
	}
	for _, c := range cases {
		v, failed := clearFailure(c.canary, stable, BaselineStep, th)
		if failed != (c.check != "") || v.Check != c.check || (failed && !v.Early) {
			t.Errorf("%s: failed %v, %v", c.name, failed, v)
		}
	}
}

func TestWilson(t *testing.T) {
	for _, c := range []struct {
		k, n     int64
		lo, hi   float64
		tolerant float64
	}{
		{0, 0, 0, 1, 0},
		{0, 100, 0, 0.0826, 0.001},
		{100, 100, 0.9174, 1, 0.001},
		{50, 100, 0.3563, 0.6437, 0.001},
		{5, 10, 0.1560, 0.8440, 0.001},
	} {
		lo, hi := wilson(c.k, c.n, 3, -1), wilson(c.k, c.n, 3, +1)
		if math.Abs(lo-c.lo) > c.tolerant || math.Abs(hi-c.hi) > c.tolerant {
			t.Errorf("wilson(%d/%d) = [%.4f, %.4f], want [%.4f, %.4f]", c.k, c.n, lo, hi, c.lo, c.hi)
		}
	}
}

func TestCountAbove(t *testing.T) {
	var h proxy.Histogram
	if countAbove(h, time.Millisecond) != 0 {
		t.Error("empty histogram")
	}
	for i := range 1000 {
		h.Add(time.Duration(i+1) * time.Millisecond)
	}
	for _, c := range []struct {
		d    time.Duration
		want uint64
	}{{0, 1000}, {500 * time.Millisecond, 500}, {990 * time.Millisecond, 10}, {2 * time.Second, 0}} {
		// Durations share buckets 1/16 wide: the count is exact only up to
		// the bucket of d.
		got := countAbove(h, c.d)
		if slack := uint64(float64(c.d/time.Millisecond)/16) + 1; got+slack < c.want || got > c.want+slack {
			t.Errorf("above %v: %d, want %d ± %d", c.d, got, c.want, slack)
		}
	}
}

func TestParseSteps(t *testing.T) {
	for in, want := range map[string][]int{
		"1,10,50,100":   {1, 10, 50, 100},
		" 5 , 25%,100 ": {5, 25, 100},
		"10":            {10},
	} {
		got, err := ParseSteps(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseSteps(%q) = %v, %v", in, got, err)
		}
	}
	for in, want := range map[string]string{
		"":          "no steps",
		"1,x,100":   `item 2 ("x")`,
		"1,,100":    `item 2 ("")`,
		"0,50":      "step 1 is 0%",
		"10,101":    "step 2 is 101%",
		"10,10,100": "step 2 (10%) does not raise",
		"50,10":     "step 2 (10%) does not raise",
		"-5":        "step 1 is -5%",
	} {
		_, err := ParseSteps(in)
		if !errors.Is(err, ErrBadPlan) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSteps(%q): %v, want an ErrBadPlan saying %q", in, err, want)
		}
	}
}

func TestThresholdsValidate(t *testing.T) {
	good := []Thresholds{{}, {MaxErrorRatio: 0.05, MaxP99Ratio: 1, MinRequests: 1}, {MaxP99Ratio: 3}}
	for _, th := range good {
		if err := th.Validate(); err != nil {
			t.Errorf("%+v: %v", th, err)
		}
	}
	bad := []Thresholds{
		{MaxErrorRatio: -0.1}, {MaxErrorRatio: 1}, {MaxErrorRatio: math.NaN()},
		{MaxP99Ratio: 0.5}, {MaxP99Ratio: -1}, {MaxP99Ratio: math.Inf(1)},
		{MinP99: -time.Second}, {MinRequests: -1},
	}
	for _, th := range bad {
		if err := th.Validate(); !errors.Is(err, ErrBadPlan) {
			t.Errorf("%+v: %v, want ErrBadPlan", th, err)
		}
	}
}
