// Package metrics exposes what baton does to a service as Prometheus
// metrics: upgrades and their outcome, how long each phase of an upgrade
// took, rollbacks, restarts, draining generations and their connections,
// and which build serves.
//
// One collector serves both hosts of a service: a library app
// (*baton.Upgrader, opt-in: mount Handler(up) or register
// NewCollector(up)) and the `baton run` supervisor (*supervisor.Supervisor,
// `baton run --metrics ADDR`), where the supervisor answers for all its
// generations, so several generations never answer one scrape.
//
// The core baton package does not depend on the Prometheus client; only
// programs that import this package do.
//
// Counters (baton_upgrades_total, baton_rollbacks_total{reason=
// "probation_failed"}, baton_restarts_total,
// baton_drain_forced_closes_total) are read from the source's
// Status().Counters at each scrape: a library service carries them from
// each generation to the next, so they survive upgrades although each
// generation is a new process. The duration histograms and the other
// rollback reasons are built from the lifecycle records the source
// publishes (Subscribe) while the collector exists: under baton run that
// is the supervisor's whole life; in a library service it is one
// generation's (they start again empty in the next one, which Prometheus
// treats as a counter reset). docs/metrics.md lists every metric.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/baton-go/baton"
	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/contract"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Status is what a Source's Status method returns: baton.Status (a library
// generation) or supervisor.Status (the baton run supervisor; it is the
// control protocol's status document, contract.Status).
type Status interface {
	baton.Status | contract.Status
}

// Source is a service whose metrics are collected: *baton.Upgrader and
// *supervisor.Supervisor are Sources (the type argument is inferred:
// metrics.Handler(up)).
type Source[S Status] interface {
	// Status reports the service now (read at each scrape).
	Status() S
	// Subscribe calls fn with every lifecycle record from now on, until
	// cancel is called.
	Subscribe(fn func(events.Record)) (cancel func())
}

// Handler returns an http.Handler that answers scrapes with src's baton
// metrics (and only those) in the Prometheus text format. The collector
// it reads from lives as long as the process; to add baton's metrics to a
// registry of your own, register NewCollector(src) instead.
func Handler[S Status](src Source[S]) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// Collector is a prometheus.Collector of one service's baton metrics.
type Collector struct {
	status func() view
	cancel func()

	upgrades, rollbacks, restarts, forced *prometheus.Desc
	generation, draining, conns           *prometheus.Desc
	lastOK, lastSuccess, buildInfo        *prometheus.Desc
	durations                             *prometheus.HistogramVec

	mu          sync.Mutex
	rolledBack  map[string]float64 // rollbacks by reason, from the records (manual, crash_loop)
	known       bool               // an upgrade ended since the collector was made
	ok          bool               // how the last one ended
	successAt   time.Time          // when the last successful one took over
	prevSuccess time.Time          // successAt before the upgrade under way took over
	pending     string             // the deployment whose switch set successAt
	build       buildCache
}

// Phases of an upgrade (the phase label of baton_upgrade_duration_seconds).
const (
	PhaseStart    = "start"    // from the request to the new process started
	PhaseReady    = "ready"    // from the new process's start to its ready
	PhaseHandover = "handover" // from its ready to the switch
	PhaseDrain    = "drain"    // from the switch to the replaced generation's exit
)

// Rollback reasons (the reason label of baton_rollbacks_total).
const (
	ReasonProbationFailed = "probation_failed" // the new generation failed its probation
	ReasonManual          = "manual"           // baton rollback
	ReasonCrashLoop       = "crash_loop"       // the release kept crashing; the previous one runs again
)

// Results of an upgrade (the result label of baton_upgrades_total).
const (
	ResultSuccess    = "success"     // the new generation took over (and passed its probation)
	ResultFailure    = "failure"     // the new generation never took over; the old one kept serving
	ResultRolledBack = "rolled_back" // the new generation failed its probation
)

// DurationBuckets are the buckets of baton_upgrade_duration_seconds: from
// a few milliseconds (a handover) to minutes (a drain of long requests).
var DurationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// NewCollector returns a collector of src's metrics; it subscribes to
// src's records at once (Close ends that).
func NewCollector[S Status](src Source[S]) *Collector {
	c := newCollector(func() view { return viewOf(src.Status()) })
	c.cancel = src.Subscribe(c.record)
	return c
}

func newCollector(status func() view) *Collector {
	d := prometheus.NewDesc
	return &Collector{
		status: status,
		upgrades: d("baton_upgrades_total",
			"Upgrades by result: success (the new generation took over and passed its probation), failure (it never took over; the old one kept serving), rolled_back (it failed its probation).",
			[]string{"result"}, nil),
		rollbacks: d("baton_rollbacks_total",
			"Rollbacks to the previous release by reason: probation_failed, manual (baton rollback), crash_loop (the release kept crashing).",
			[]string{"reason"}, nil),
		restarts: d("baton_restarts_total",
			"Generations started to replace one that died outside an upgrade.", nil, nil),
		forced: d("baton_drain_forced_closes_total",
			"Replaced generations killed at the drain deadline, with whatever connections they still held.", nil, nil),
		generation: d("baton_generation",
			"Number of the serving generation (1 at the service's start, one more at each upgrade, rollback or restart).", nil, nil),
		draining: d("baton_draining_generations",
			"Replaced generations still draining.", nil, nil),
		conns: d("baton_connections",
			"Open connections on the service's stream sockets, held by the serving generation or by the draining ones (Linux only).",
			[]string{"generation_role"}, nil),
		lastOK: d("baton_last_upgrade_successful",
			"1 if the last upgrade succeeded, 0 if it failed or was rolled back; absent before the first.", nil, nil),
		lastSuccess: d("baton_last_upgrade_success_timestamp_seconds",
			"Unix time at which the last successful upgrade's new generation took over; absent before the first.", nil, nil),
		buildInfo: d("baton_build_info",
			"Always 1: the serving generation's binary (its main module version, the Go version it was built with, its sha256).",
			[]string{"version", "go_version", "binary_sha256"}, nil),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "baton_upgrade_duration_seconds",
			Help:    "How long each phase of an upgrade took: start (request to process started), ready (process start to ready), handover (ready to switch), drain (switch to the replaced generation's exit).",
			Buckets: DurationBuckets,
		}, []string{"phase"}),
		rolledBack: map[string]float64{},
	}
}

// Close ends the collector's subscription to its source's records; what it
// counted so far stays.
func (c *Collector) Close() {
	if c.cancel != nil {
		c.cancel()
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.upgrades, c.rollbacks, c.restarts, c.forced, c.generation,
		c.draining, c.conns, c.lastOK, c.lastSuccess, c.buildInfo} {
		ch <- d
	}
	c.durations.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	v := c.status()
	counter := func(d *prometheus.Desc, n float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, n, labels...)
	}
	gauge := func(d *prometheus.Desc, n float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, n, labels...)
	}
	k := v.counters
	counter(c.upgrades, float64(k.UpgradesSucceeded), ResultSuccess)
	counter(c.upgrades, float64(k.UpgradesFailed), ResultFailure)
	counter(c.upgrades, float64(k.UpgradesRolledBack), ResultRolledBack)
	counter(c.restarts, float64(k.Restarts))
	counter(c.forced, float64(k.DrainsForced))
	gauge(c.generation, float64(v.generation))
	gauge(c.draining, float64(len(v.draining)))

	c.mu.Lock()
	rolled := map[string]float64{ReasonManual: c.rolledBack[ReasonManual], ReasonCrashLoop: c.rolledBack[ReasonCrashLoop]}
	known, ok, at := c.known, c.ok, c.successAt
	c.mu.Unlock()
	rolled[ReasonProbationFailed] = float64(k.UpgradesRolledBack)
	for _, r := range []string{ReasonProbationFailed, ReasonManual, ReasonCrashLoop} {
		counter(c.rollbacks, rolled[r], r)
	}
	if !known {
		// Nothing ended while we watched: what the status tells.
		known, ok, at = v.lastUpgrade()
	}
	if known {
		gauge(c.lastOK, boolFloat(ok))
	}
	if !at.IsZero() {
		gauge(c.lastSuccess, float64(at.UnixNano())/1e9)
	}
	if serving, draining, ok := v.conns(); ok {
		gauge(c.conns, float64(serving), "serving")
		gauge(c.conns, float64(draining), "draining")
	}
	if v.pid > 0 {
		b := c.build.get(v.pid, v.binary)
		gauge(c.buildInfo, 1, b.version, b.goVersion, b.sha256)
	}
	c.durations.Collect(ch)
}

// record follows the source's lifecycle records (synchronously: short).
func (c *Collector) record(r events.Record) {
	upgrade := r.Operation == "upgrade"
	// The new generation's steps (a rollback after a failed probation
	// belongs to the same operation: its generation's reason tells them
	// apart).
	ownGen := upgrade && r.Reason == "upgrade"
	switch {
	case r.Name == events.Started && ownGen:
		c.durations.WithLabelValues(PhaseStart).Observe(r.Duration)
	case r.Name == events.Ready && ownGen:
		c.durations.WithLabelValues(PhaseReady).Observe(r.Duration)
	case r.Name == events.Switched && ownGen:
		c.durations.WithLabelValues(PhaseHandover).Observe(r.Duration)
		c.mu.Lock()
		c.known, c.ok = true, true
		c.prevSuccess, c.successAt, c.pending = c.successAt, r.Time, r.Deployment
		c.mu.Unlock()
	case r.Name == events.Drained && upgrade:
		c.durations.WithLabelValues(PhaseDrain).Observe(r.Duration)
	case (r.Name == events.UpgradeFailed || r.Name == events.ProbationFailed) && upgrade:
		c.mu.Lock()
		c.known, c.ok = true, false
		if c.pending != "" && c.pending == r.Deployment {
			c.successAt = c.prevSuccess // it took over, and did not hold
		}
		c.pending = ""
		c.mu.Unlock()
	case r.Name == events.RolledBack && r.Reason == "fallback":
		c.addRollback(ReasonCrashLoop)
	case r.Name == events.RolledBack && r.Operation == "rollback":
		// (A rollback asked for during a probation ends that probation:
		// it counts as probation_failed.)
		c.addRollback(ReasonManual)
	}
}

func (c *Collector) addRollback(reason string) {
	c.mu.Lock()
	c.rolledBack[reason]++
	c.mu.Unlock()
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
