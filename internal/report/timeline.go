// Package report turns a service's event records (package events) into
// what operators look at: a timeline of its recent upgrades (Build), drawn
// as one self-contained HTML page with an SVG picture and a table (HTML),
// and the short durations that `baton events` and `baton upgrade` print
// (Duration). Everything here is a pure function of the records.
package report

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/baton-go/baton/events"
)

// Phase is what a generation was doing.
type Phase string

// The phases of a generation, in the order they normally come.
const (
	Starting Phase = "starting" // started, not ready yet
	Ready    Phase = "ready"    // ready, not serving yet
	Serving  Phase = "serving"
	Draining Phase = "draining" // handed over, finishing its in-flight work
	Exited   Phase = "exited"   // gone after its drain (or killed at the drain deadline)
	Failed   Phase = "failed"   // never got ready, failed its probation, or crashed
)

// Phases lists every phase, for legends.
var Phases = []Phase{Starting, Ready, Serving, Draining, Exited, Failed}

// Span is one phase of a generation. Exited and Failed spans are instants
// (From == To): the generation's end.
type Span struct {
	Phase Phase     `json:"phase"`
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	// Open: the phase still lasted when the records end.
	Open bool `json:"open,omitempty"`
	// Why is the record that ended it, for failures and kills.
	Why string `json:"why,omitempty"`
}

// Took is the span's length.
func (s Span) Took() time.Duration { return s.To.Sub(s.From) }

// Lane is one generation: one process of the service.
type Lane struct {
	Generation int    `json:"generation"`
	PID        int    `json:"pid"`
	Reason     string `json:"reason,omitempty"` // why it was started: start, upgrade, rollback, restart
	Binary     string `json:"binary,omitempty"`
	Spans      []Span `json:"spans"`
	// Killed: it did not finish its drain in time and was killed.
	Killed bool `json:"killed,omitempty"`
	// Before: it was running before the first record shown.
	Before bool `json:"before,omitempty"`
}

// End is the phase the generation ended in (Exited, Failed) or the one it
// is still in.
func (l Lane) End() Phase {
	if len(l.Spans) == 0 {
		return ""
	}
	return l.Spans[len(l.Spans)-1].Phase
}

// MarkKind says what a Mark is.
type MarkKind string

// Marks on the timeline.
const (
	MarkUpgrade  MarkKind = "upgrade"  // an operation started (upgrade, rollback, restart, start, stop)
	MarkSwitch   MarkKind = "switch"   // a new generation took over
	MarkRollback MarkKind = "rollback" // a rollback: the previous release serves again
	MarkFailed   MarkKind = "failed"   // an upgrade failed; the old generation kept serving
	MarkGaveUp   MarkKind = "gave_up"  // the supervisor gave up on an app that keeps failing
)

// Mark is an instant worth a line across the lanes.
type Mark struct {
	Kind       MarkKind  `json:"kind"`
	At         time.Time `json:"time"`
	Label      string    `json:"label"`
	Deployment string    `json:"deployment.id,omitempty"`
}

// Ref names a generation.
type Ref struct {
	Generation int `json:"generation"`
	PID        int `json:"pid"`
}

// Upgrade is one operation (an upgrade, rollback, restart, start or stop:
// one deployment id) and how long its steps took. Durations are zero when
// the step did not happen (or was not recorded).
type Upgrade struct {
	Deployment string    `json:"deployment.id"`
	Operation  string    `json:"operation"`
	At         time.Time `json:"time"`
	// Result: ok, failed (the old generation kept serving), rolled_back
	// (the new one failed its probation; the previous release serves
	// again), or running (not finished when the records end).
	Result    string `json:"result"`
	ErrorType string `json:"error.type,omitempty"`
	Error     string `json:"error.message,omitempty"`
	From      *Ref   `json:"from,omitempty"` // the generation serving before
	To        *Ref   `json:"to,omitempty"`   // the generation it started
	// Start: from the operation's start to the new process started;
	// Ready: from the process start to ready; Handover: ready to
	// committed; Switch: from the operation's start until the new
	// generation serves; Drain: the old generation's drain.
	Start    time.Duration `json:"start_ns,omitempty"`
	Ready    time.Duration `json:"ready_ns,omitempty"`
	Handover time.Duration `json:"handover_ns,omitempty"`
	Switch   time.Duration `json:"switch_ns,omitempty"`
	Drain    time.Duration `json:"drain_ns,omitempty"`
	// DrainKilled: the old generation was killed at the drain deadline.
	DrainKilled bool `json:"drain_killed,omitempty"`
}

// Timeline is what Build makes of the records.
type Timeline struct {
	Service  string    `json:"service"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Lanes    []Lane    `json:"generations"`
	Marks    []Mark    `json:"marks"`
	Upgrades []Upgrade `json:"upgrades"`
	// Records is how many records the timeline shows, of Total read.
	Records int `json:"records"`
	Total   int `json:"records_read"`
	// Skipped lines of the events file that were not records.
	Skipped int `json:"skipped_lines,omitempty"`
	// Source names where the records come from (the events file).
	Source string `json:"source,omitempty"`
	// Location is the time zone the page shows times in (nil: UTC).
	Location *time.Location `json:"-"`
}

// Counts are how many of the timeline's operations succeeded, failed and
// were rolled back.
func (t *Timeline) Counts() (ok, failed, rolledBack int) {
	for _, u := range t.Upgrades {
		switch u.Result {
		case "ok":
			ok++
		case "failed":
			failed++
		case "rolled_back":
			rolledBack++
		}
	}
	return ok, failed, rolledBack
}

// Options shape a timeline.
type Options struct {
	// Service names the service (records of other services are left out
	// when set).
	Service string
	// Upgrades is how many of the most recent operations (deployments) to
	// show, with everything that happened from the first one on (0: 10;
	// negative: all).
	Upgrades int
	// Since leaves out records older than this (zero: none).
	Since time.Time
	// Now ends the timeline: generations still running are drawn up to it
	// (zero: the last record's time).
	Now time.Time
	// Skipped and Source are reported on the page as they are.
	Skipped int
	Source  string
	// Location: the time zone of the page (nil: UTC).
	Location *time.Location
}

// DefaultUpgrades is Options.Upgrades' default.
const DefaultUpgrades = 10

// Build makes the timeline of recs (in any order; sorted by time here,
// stably: records of one process keep their order).
func Build(recs []events.Record, opt Options) *Timeline {
	t := &Timeline{Service: opt.Service, Total: len(recs), Skipped: opt.Skipped, Source: opt.Source, Location: opt.Location}
	var rs []events.Record
	for _, r := range recs {
		if opt.Service != "" && r.Service != "" && r.Service != opt.Service {
			continue
		}
		if !opt.Since.IsZero() && r.Time.Before(opt.Since) {
			continue
		}
		rs = append(rs, r)
	}
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].Time.Before(rs[j].Time) })
	rs = recent(rs, opt.Upgrades)
	t.Records = len(rs)
	if len(rs) == 0 {
		return t
	}
	if t.Service == "" {
		t.Service = rs[0].Service
	}
	t.From, t.To = rs[0].Time, rs[len(rs)-1].Time
	if opt.Now.After(t.To) {
		t.To = opt.Now
	}
	t.Lanes = lanes(rs, t.From, t.To)
	t.Marks = marks(rs)
	t.Upgrades = upgrades(rs)
	return t
}

// recent keeps the records from the first of the last n deployments on.
func recent(rs []events.Record, n int) []events.Record {
	if n == 0 {
		n = DefaultUpgrades
	}
	if n < 0 {
		return rs
	}
	first := map[string]int{}
	var order []string
	for i, r := range rs {
		if r.Deployment == "" {
			continue
		}
		if _, ok := first[r.Deployment]; !ok {
			first[r.Deployment] = i
			order = append(order, r.Deployment)
		}
	}
	if len(order) <= n {
		return rs
	}
	return rs[first[order[len(order)-n]]:]
}

type genKey struct{ gen, pid int }

type transition struct {
	at    time.Time
	phase Phase
	why   string
}

// phaseBefore is the phase a generation was in before r, when r is the
// first record of it shown.
func phaseBefore(r events.Record) Phase {
	switch r.Name {
	case events.Ready, events.StartFailed:
		return Starting
	case events.Switched, events.RolledBack:
		return Ready
	case events.Started, events.Serving:
		return ""
	}
	return Serving
}

func lanes(rs []events.Record, from, to time.Time) []Lane {
	idx := map[genKey]int{}
	var out []Lane
	var trans [][]transition
	for _, r := range rs {
		if r.PID == 0 || r.Generation == 0 {
			continue
		}
		k := genKey{r.Generation, r.PID}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Lane{Generation: r.Generation, PID: r.PID, Reason: r.Reason, Binary: r.Binary})
			trans = append(trans, nil)
			if p := phaseBefore(r); p != "" {
				out[i].Before = true
				if r.Time.After(from) {
					trans[i] = append(trans[i], transition{at: from, phase: p})
				}
			}
		}
		if out[i].Reason == "" {
			out[i].Reason = r.Reason
		}
		why := ""
		if r.Error != "" {
			why = r.ErrorType
			if why == "" {
				why = firstLine(r.Error)
			}
		}
		add := func(at time.Time, p Phase) { trans[i] = append(trans[i], transition{at: at, phase: p, why: why}) }
		switch r.Name {
		case events.Started:
			add(r.Time, Starting)
		case events.Ready:
			add(r.Time, Ready)
		case events.Switched, events.Serving, events.RolledBack,
			events.UpgradeStarted, events.ProbationPassed, events.Stopping: // the latter: it serves
			add(r.Time, Serving)
		case events.StartFailed, events.ProbationFailed, events.Crashed:
			add(r.Time, Failed)
		case events.Drained, events.Killed:
			start := r.Time.Add(-r.Took())
			add(start, Draining)
			add(r.Time, Exited)
			if r.Name == events.Killed {
				out[i].Killed = true
			}
		}
	}
	for i := range out {
		out[i].Spans = spans(trans[i], to)
	}
	return out
}

// spans turns a generation's transitions into spans: a repeated phase
// continues, an end (Exited, Failed) is final, times never go back.
func spans(ts []transition, end time.Time) []Span {
	var out []Span
	for _, tr := range ts {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if last.Phase == Exited || last.Phase == Failed {
				break // the end: later records (a drain after a failure) add nothing
			}
			if tr.at.Before(last.From) {
				tr.at = last.From // clocks of two processes, or a drain measured from before the switch was recorded
			}
			if tr.phase == last.Phase {
				continue
			}
			last.To = tr.at
		}
		out = append(out, Span{Phase: tr.phase, From: tr.at, To: tr.at, Why: tr.why})
	}
	if n := len(out); n > 0 && out[n-1].Phase != Exited && out[n-1].Phase != Failed {
		last := &out[n-1]
		if end.After(last.From) {
			last.To = end
		}
		last.Open = true
	}
	// Drop empty phases in the middle (a record that came a microsecond
	// later), but keep the ends.
	kept := out[:0]
	for i, s := range out {
		if i < len(out)-1 && !s.To.After(s.From) && s.Phase != Exited && s.Phase != Failed {
			continue
		}
		kept = append(kept, s)
	}
	return kept
}

func marks(rs []events.Record) []Mark {
	var out []Mark
	for _, r := range rs {
		m := Mark{At: r.Time, Deployment: r.Deployment}
		switch r.Name {
		case events.UpgradeStarted:
			m.Kind, m.Label = MarkUpgrade, "upgrade"
		case events.Started:
			if r.Operation == "upgrade" || r.Operation == "" {
				continue // the upgrade's own mark says it
			}
			m.Kind, m.Label = MarkUpgrade, r.Operation
		case events.Switched:
			m.Kind, m.Label = MarkSwitch, "gen "+strconv.Itoa(r.Generation)+" took over"
		case events.RolledBack:
			m.Kind, m.Label = MarkRollback, "rolled back to gen "+strconv.Itoa(r.Generation)
		case events.UpgradeFailed:
			m.Kind, m.Label = MarkFailed, "upgrade failed"
			if r.ErrorType != "" {
				m.Label += " (" + r.ErrorType + ")"
			}
		case events.GaveUp:
			m.Kind, m.Label = MarkGaveUp, "gave up"
		default:
			continue
		}
		// One operation mark per deployment: a rollback's or restart's
		// first record.
		if m.Kind == MarkUpgrade && len(out) > 0 && m.Deployment != "" {
			dup := false
			for _, o := range out {
				if o.Kind == MarkUpgrade && o.Deployment == m.Deployment {
					dup = true
					break
				}
			}
			if dup {
				continue
			}
		}
		out = append(out, m)
	}
	return out
}

func upgrades(rs []events.Record) []Upgrade {
	idx := map[string]int{}
	var out []Upgrade
	var ended []bool
	for _, r := range rs {
		if r.Deployment == "" {
			continue
		}
		i, ok := idx[r.Deployment]
		if !ok {
			i = len(out)
			idx[r.Deployment] = i
			out = append(out, Upgrade{Deployment: r.Deployment, Operation: r.Operation, At: r.Time, Result: "running"})
			ended = append(ended, false)
		}
		u := &out[i]
		if u.Operation == "" {
			u.Operation = r.Operation
		}
		ref := &Ref{Generation: r.Generation, PID: r.PID}
		isTo := u.To != nil && *u.To == *ref
		switch r.Name {
		case events.UpgradeStarted:
			if r.PID != 0 {
				u.From = ref
			}
		case events.Started:
			// The generation the operation started; a generation started
			// after it failed its probation (the rescue) is not it.
			if u.To == nil {
				u.To, u.Start = ref, r.Took()
			}
		case events.Ready:
			if isTo {
				u.Ready = r.Took()
			}
		case events.Switched:
			if u.To == nil {
				u.To, isTo = ref, true
			}
			if isTo {
				u.Handover = r.Took()
				u.Switch = r.Time.Sub(u.At)
				if !ended[i] {
					u.Result = "ok"
				}
			}
		case events.Serving:
			if u.Operation == "start" || u.Operation == "restart" {
				if u.To == nil {
					u.To = ref
				}
				u.Switch = r.Time.Sub(u.At)
				if !ended[i] {
					u.Result = "ok"
				}
			}
		case events.ProbationFailed, events.RolledBack:
			if u.Operation == "rollback" {
				u.Result = "ok"
				break
			}
			u.Result, ended[i] = "rolled_back", true
		case events.UpgradeFailed, events.StartFailed:
			if u.Result != "rolled_back" {
				u.Result, ended[i] = "failed", true
			}
		case events.GaveUp:
			u.Result, ended[i] = "failed", true
		case events.Drained, events.Killed:
			if u.Operation == "stop" && !ended[i] {
				u.Result = "ok" // a stop ends with the drains
			}
			if u.To == nil || !isTo {
				if u.From == nil && u.To != nil {
					u.From = ref
				}
				if u.From != nil && *u.From == *ref {
					u.Drain = r.Took()
					u.DrainKilled = r.Name == events.Killed
				}
			}
		}
		if r.Error != "" && u.Error == "" {
			u.ErrorType, u.Error = r.ErrorType, r.Error
		}
	}
	return out
}

// Duration formats d short and readable: 850µs, 12.3ms, 1.25s, 2m3s.
func Duration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return strconv.Itoa(int(d.Microseconds())) + "µs"
	case d < 100*time.Millisecond:
		return trim(float64(d)/float64(time.Millisecond), 1) + "ms"
	case d < time.Second:
		return strconv.Itoa(int(d.Round(time.Millisecond).Milliseconds())) + "ms"
	case d < time.Minute:
		return trim(d.Seconds(), 2) + "s"
	}
	return d.Round(time.Second).String()
}

// trim formats f with at most prec decimals, without trailing zeros.
func trim(f float64, prec int) string {
	s := strconv.FormatFloat(f, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
