package metrics

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-go/baton"
	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/contract"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// fake is a Source whose status and records the test sets.
type fake[S Status] struct {
	mu   sync.Mutex
	st   S
	subs []func(events.Record)
}

func (f *fake[S]) Status() S {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fake[S]) set(st S) {
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
}

func (f *fake[S]) Subscribe(fn func(events.Record)) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := len(f.subs)
	f.subs = append(f.subs, fn)
	return func() {
		f.mu.Lock()
		f.subs[i] = nil
		f.mu.Unlock()
	}
}

func (f *fake[S]) emit(rs ...events.Record) {
	f.mu.Lock()
	subs := make([]func(events.Record), len(f.subs))
	copy(subs, f.subs)
	f.mu.Unlock()
	for _, r := range rs {
		for _, fn := range subs {
			if fn != nil {
				fn(r)
			}
		}
	}
}

// gather collects c and returns its families by name.
func gather(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// value is the value of the sample of family name whose labels are
// label=value pairs (ok false when there is none).
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func want(t *testing.T, mfs map[string]*dto.MetricFamily, v float64, name string, labels ...string) {
	t.Helper()
	got, ok := value(mfs, name, labels...)
	if !ok {
		t.Errorf("%s%v: absent, want %v", name, labels, v)
	} else if got != v {
		t.Errorf("%s%v = %v, want %v", name, labels, got, v)
	}
}

func absent(t *testing.T, mfs map[string]*dto.MetricFamily, name string) {
	t.Helper()
	if _, ok := value(mfs, name); ok {
		t.Errorf("%s present, want absent", name)
	}
}

// upgrade is the records of one upgrade that took over (and drained its
// predecessor), each phase taking the given seconds.
func upgrade(dep string, at time.Time, start, ready, handover, drain float64) []events.Record {
	r := func(name, reason string, d float64) events.Record {
		return events.Record{Time: at, Name: name, Operation: "upgrade", Deployment: dep, Reason: reason, Duration: d}
	}
	return []events.Record{
		r(events.UpgradeStarted, "", 0),
		r(events.Started, "upgrade", start),
		r(events.Ready, "upgrade", ready),
		r(events.Switched, "upgrade", handover),
		r(events.Drained, "start", drain),
	}
}

// The supervisor's counters, generation and draining generations are
// what its status says at each scrape.
func TestSupervisorStatus(t *testing.T) {
	src := &fake[contract.Status]{st: contract.Status{PID: os.Getpid(), Generation: 7, Draining: []int{0, 0},
		Counters: &contract.Counters{UpgradesSucceeded: 5, UpgradesFailed: 2, UpgradesRolledBack: 1, Restarts: 3, DrainsForced: 4}}}
	c := NewCollector(src)
	defer c.Close()
	m := gather(t, c)
	want(t, m, 5, "baton_upgrades_total", "result", "success")
	want(t, m, 2, "baton_upgrades_total", "result", "failure")
	want(t, m, 1, "baton_upgrades_total", "result", "rolled_back")
	want(t, m, 1, "baton_rollbacks_total", "reason", "probation_failed")
	want(t, m, 0, "baton_rollbacks_total", "reason", "manual")
	want(t, m, 0, "baton_rollbacks_total", "reason", "crash_loop")
	want(t, m, 3, "baton_restarts_total")
	want(t, m, 4, "baton_drain_forced_closes_total")
	want(t, m, 7, "baton_generation")
	want(t, m, 2, "baton_draining_generations")
	absent(t, m, "baton_last_upgrade_successful") // nothing happened yet
	absent(t, m, "baton_last_upgrade_success_timestamp_seconds")

	// The next scrape reads the status again.
	st := src.Status()
	st.Generation, st.Draining, st.Counters = 8, []int{}, &contract.Counters{UpgradesSucceeded: 6}
	src.set(st)
	m = gather(t, c)
	want(t, m, 6, "baton_upgrades_total", "result", "success")
	want(t, m, 8, "baton_generation")
	want(t, m, 0, "baton_draining_generations")
}

// The histograms observe each phase of the upgrades, and only of the
// upgrades: not the rollback generation after a failed probation, not a
// baton rollback, not a first start or a restart.
func TestDurations(t *testing.T) {
	src := &fake[contract.Status]{st: contract.Status{Counters: &contract.Counters{}}}
	c := NewCollector(src)
	defer c.Close()
	now := time.Now()
	for i := range 5 {
		src.emit(upgrade("d"+string(rune('0'+i)), now, 0.01, 0.2, 0.003, 1.5)...)
	}
	// A probation that failed: its rollback generation is no upgrade's.
	src.emit(events.Record{Name: events.ProbationFailed, Operation: "upgrade", Deployment: "p", Reason: "upgrade"},
		events.Record{Name: events.Started, Operation: "upgrade", Deployment: "p", Reason: "rollback", Duration: 1},
		events.Record{Name: events.Ready, Operation: "upgrade", Deployment: "p", Reason: "rollback", Duration: 1},
		events.Record{Name: events.Switched, Operation: "upgrade", Deployment: "p", Reason: "rollback", Duration: 1},
		events.Record{Name: events.RolledBack, Operation: "upgrade", Deployment: "p", Reason: "rollback"})
	// baton rollback, a first start, a restart.
	for _, op := range []string{"rollback", "start", "restart"} {
		src.emit(events.Record{Name: events.Started, Operation: op, Reason: op, Duration: 1},
			events.Record{Name: events.Ready, Operation: op, Reason: op, Duration: 1},
			events.Record{Name: events.Switched, Operation: op, Reason: op, Duration: 1},
			events.Record{Name: events.Drained, Operation: op, Reason: "upgrade", Duration: 1})
	}
	m := gather(t, c)
	for _, p := range []string{PhaseStart, PhaseReady, PhaseHandover, PhaseDrain} {
		want(t, m, 5, "baton_upgrade_duration_seconds", "phase", p)
	}
	var sum float64
	for _, s := range m["baton_upgrade_duration_seconds"].GetMetric() {
		for _, lp := range s.GetLabel() {
			if lp.GetValue() == PhaseDrain {
				sum = s.GetHistogram().GetSampleSum()
			}
		}
	}
	if sum != 7.5 {
		t.Errorf("drain sum %v, want 7.5", sum)
	}
	want(t, m, 0, "baton_last_upgrade_successful") // the last upgrade failed its probation
}

// The last upgrade's outcome follows the records: success at the switch,
// failure at a failed start or probation, and a switch that did not hold
// its probation gives the timestamp of the one before back.
func TestLastUpgrade(t *testing.T) {
	src := &fake[contract.Status]{st: contract.Status{}}
	c := NewCollector(src)
	defer c.Close()
	t1 := time.Unix(1_700_000_000, 0)
	t2 := t1.Add(time.Hour)
	src.emit(upgrade("a", t1, 0, 0, 0, 0)...)
	m := gather(t, c)
	want(t, m, 1, "baton_last_upgrade_successful")
	want(t, m, float64(t1.Unix()), "baton_last_upgrade_success_timestamp_seconds")

	src.emit(events.Record{Time: t2, Name: events.Switched, Operation: "upgrade", Deployment: "b", Reason: "upgrade"},
		events.Record{Time: t2, Name: events.ProbationFailed, Operation: "upgrade", Deployment: "b", Reason: "upgrade"})
	m = gather(t, c)
	want(t, m, 0, "baton_last_upgrade_successful")
	want(t, m, float64(t1.Unix()), "baton_last_upgrade_success_timestamp_seconds")

	src.emit(events.Record{Time: t2, Name: events.UpgradeFailed, Operation: "upgrade", Deployment: "c"})
	m = gather(t, c)
	want(t, m, 0, "baton_last_upgrade_successful")

	src.emit(upgrade("d", t2, 0, 0, 0, 0)...)
	m = gather(t, c)
	want(t, m, 1, "baton_last_upgrade_successful")
	want(t, m, float64(t2.Unix()), "baton_last_upgrade_success_timestamp_seconds")
}

// Rollbacks by reason: baton rollback, a crash loop's fallback (its
// record has no operation any more), a failed probation (the counters).
func TestRollbackReasons(t *testing.T) {
	src := &fake[contract.Status]{st: contract.Status{Counters: &contract.Counters{UpgradesRolledBack: 2}}}
	c := NewCollector(src)
	defer c.Close()
	src.emit(events.Record{Name: events.RolledBack, Operation: "rollback", Reason: "rollback"},
		events.Record{Name: events.RolledBack, Operation: "rollback", Reason: "rollback"},
		events.Record{Name: events.RolledBack, Reason: "fallback"},
		events.Record{Name: events.RolledBack, Operation: "upgrade", Reason: "rollback"}) // counted by the counters
	m := gather(t, c)
	want(t, m, 2, "baton_rollbacks_total", "reason", "manual")
	want(t, m, 1, "baton_rollbacks_total", "reason", "crash_loop")
	want(t, m, 2, "baton_rollbacks_total", "reason", "probation_failed")
	c.Close()
	src.emit(events.Record{Name: events.RolledBack, Operation: "rollback", Reason: "rollback"})
	m = gather(t, c)
	want(t, m, 2, "baton_rollbacks_total", "reason", "manual") // closed: no longer counted
}

// A library generation started by an upgrade shows the counters it was
// handed and that upgrade as its last, successful at its ready; one
// started by a rescue shows the failure.
func TestLibraryGeneration(t *testing.T) {
	ready := time.Unix(1_700_000_500, 0)
	src := &fake[baton.Status]{st: baton.Status{PID: os.Getpid(), Generation: 4, ParentPID: 1, ReadyAt: &ready, Draining: []int{},
		Counters: baton.Counters{UpgradesSucceeded: 3, UpgradesFailed: 1}}}
	c := NewCollector(src)
	defer c.Close()
	m := gather(t, c)
	want(t, m, 3, "baton_upgrades_total", "result", "success")
	want(t, m, 1, "baton_upgrades_total", "result", "failure")
	want(t, m, 4, "baton_generation")
	want(t, m, 1, "baton_last_upgrade_successful")
	want(t, m, float64(ready.Unix()), "baton_last_upgrade_success_timestamp_seconds")

	src.set(baton.Status{PID: os.Getpid(), Generation: 5, ParentPID: 1, ReadyAt: &ready,
		Last: &baton.UpgradeOutcome{At: ready, OK: false, Code: contract.CodeRolledBack}, Counters: baton.Counters{UpgradesRolledBack: 1}})
	c2 := NewCollector(src)
	defer c2.Close()
	m = gather(t, c2)
	want(t, m, 0, "baton_last_upgrade_successful")
	absent(t, m, "baton_last_upgrade_success_timestamp_seconds")
	want(t, m, 1, "baton_rollbacks_total", "reason", "probation_failed")
}

// baton_build_info names the serving generation's binary: here this test
// binary (its sha256, the Go version it was built with).
func TestBuildInfo(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	src := &fake[contract.Status]{st: contract.Status{PID: os.Getpid(), Binary: exe}}
	c := NewCollector(src)
	defer c.Close()
	m := gather(t, c)
	want(t, m, 1, "baton_build_info", "binary_sha256", hex.EncodeToString(sum[:]), "go_version", runtime.Version())
}

// Every metric follows Prometheus's naming conventions (promlint).
func TestLint(t *testing.T) {
	src := &fake[contract.Status]{st: contract.Status{PID: os.Getpid(), Counters: &contract.Counters{}}}
	c := NewCollector(src)
	defer c.Close()
	src.emit(upgrade("a", time.Now(), 0.1, 0.1, 0.1, 0.1)...)
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// Handler answers in the Prometheus text format, which parses.
func TestHandler(t *testing.T) {
	src := &fake[contract.Status]{st: contract.Status{PID: os.Getpid(), Generation: 2, Counters: &contract.Counters{UpgradesSucceeded: 1}}}
	srv := httptest.NewServer(Handler(src))
	defer srv.Close()
	src.emit(upgrade("a", time.Now(), 0.1, 0.1, 0.1, 0.1)...)
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("not Prometheus text: %v\n%s", err, body)
	}
	want(t, mfs, 1, "baton_upgrades_total", "result", "success")
	want(t, mfs, 2, "baton_generation")
	want(t, mfs, 1, "baton_upgrade_duration_seconds", "phase", "handover")
}
