package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/report"
)

// progress prints the steps of one upgrade as the service records them
// (starting, ready, handed over, old drained, or how it failed), each with
// the time since the command asked for it. It reads the service's event
// records: the first upgrade that starts after the command's request is
// the one followed; records of other operations, and records seen twice,
// are left out.
type progress struct {
	w     io.Writer
	name  string
	start time.Time // when the command sent its request

	dep      string // the followed operation (deployment id), once known
	old, new int    // pids: the generation serving before, the one started
	drained  bool   // the old generation is gone (drained or killed)
	ended    bool   // the operation failed or was rolled back: nothing more to wait for
	seen     map[string]bool
}

func newProgress(w io.Writer, name string, start time.Time) *progress {
	return &progress{w: w, name: name, start: start, seen: map[string]bool{}}
}

// record prints r if it is a step of the followed upgrade.
func (p *progress) record(r events.Record) {
	if p.dep == "" {
		if !p.startsOperation(r) {
			return
		}
		p.dep = r.Deployment
	}
	if r.Deployment != p.dep {
		return
	}
	k := fmt.Sprint(r.Time.UnixNano(), r.Name, r.PID, r.Generation)
	if p.seen[k] {
		return
	}
	p.seen[k] = true
	gen := fmt.Sprintf("generation %d (pid %d)", r.Generation, r.PID)
	took := report.Duration(r.Took())
	why := r.ErrorType
	if why == "" {
		why = firstLine(r.Error)
	}
	switch r.Name {
	case events.UpgradeStarted:
		p.old = r.PID
		fmt.Fprintf(p.w, "upgrading %s: %s serves\n", p.name, gen)
	case events.Started:
		if p.new == 0 {
			p.new = r.PID
			p.line(r, "starting", gen)
		} else {
			p.line(r, "restarting", gen+" ("+r.Reason+")")
		}
	case events.Ready:
		p.line(r, "ready", fmt.Sprintf("%s, %s after its start", gen, took))
	case events.Switched:
		if p.old == 0 {
			p.line(r, "handed over", fmt.Sprintf("to %s (handover %s)", gen, took))
		} else {
			p.line(r, "handed over", fmt.Sprintf("to %s (handover %s); the old generation drains", gen, took))
		}
	case events.ProbationPassed:
		if r.PID == p.new {
			p.line(r, "probation", fmt.Sprintf("passed: %s kept serving", gen))
		}
	case events.Drained, events.Killed:
		what := "old drained"
		text := fmt.Sprintf("%s drained in %s", gen, took)
		if r.Name == events.Killed {
			what, text = "old killed", fmt.Sprintf("%s killed at the drain deadline after %s", gen, took)
		}
		if r.PID != p.old && p.old != 0 {
			what = "drained"
		}
		p.line(r, what, text)
		if r.PID == p.old || p.old == 0 {
			p.drained = true
		}
	case events.StartFailed:
		p.line(r, "failed", fmt.Sprintf("%s: %s", gen, why))
		p.ended = true
	case events.ProbationFailed:
		p.line(r, "failed", fmt.Sprintf("%s failed its probation: %s", gen, why))
		p.ended = true
	case events.RolledBack:
		p.line(r, "rolled back", fmt.Sprintf("%s serves", gen))
		p.ended = true
	case events.UpgradeFailed:
		p.line(r, "failed", fmt.Sprintf("the upgrade failed after %s: %s", took, why))
		p.ended = true
	}
}

// startsOperation reports whether r can start the followed operation:
// the first upgrade started after the request.
func (p *progress) startsOperation(r events.Record) bool {
	return !r.Time.Before(p.start) && r.Deployment != "" && (r.Name == events.UpgradeStarted || r.Name == events.Started) &&
		(r.Operation == "" || r.Operation == "upgrade")
}

func (p *progress) line(r events.Record, what, text string) {
	at := r.Time.Sub(p.start)
	if at < 0 {
		at = 0
	}
	fmt.Fprintf(p.w, "  %s  %-12s %s\n", padLeft("+"+report.Duration(at), 9), what, text)
}

// padLeft right-aligns s in n columns (counted in runes: "µs").
func padLeft(s string, n int) string {
	if k := utf8.RuneCountInString(s); k < n {
		return strings.Repeat(" ", n-k) + s
	}
	return s
}

// waits reports whether the old generation's end is still to come.
func (p *progress) waits() bool { return p.dep != "" && !p.drained && !p.ended && p.old != 0 }

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// progressWatch feeds a progress from the events file while the upgrade
// runs.
type progressWatch struct {
	p       *progress
	path    string
	mu      sync.Mutex
	changed chan struct{} // a record was printed
	cancel  context.CancelFunc
	done    chan struct{}
}

// watchProgress starts following the service's events file for p; it
// never fails the upgrade (no file: nothing is shown).
func watchProgress(ctx context.Context, p *progress) *progressWatch {
	path, _ := eventsPath(p.name) // where a service would write them, when there is no file yet
	ctx, cancel := context.WithCancel(ctx)
	pw := &progressWatch{p: p, path: path, changed: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(pw.done)
		events.Follow(ctx, path, 20*time.Millisecond, pw.feed)
	}()
	return pw
}

func (pw *progressWatch) feed(r events.Record) {
	pw.mu.Lock()
	if pw.p.dep == "" && pw.p.startsOperation(r) {
		// Follow takes its starting point in its own goroutine, which may
		// come after the operation's first records were written: those
		// are read from the file first, in order (r among them), or a
		// "starting" step would come before the "upgrading" line.
		pw.readFileLocked()
	}
	pw.p.record(r)
	pw.mu.Unlock()
	pw.notify()
}

// catchUp reads the records Follow may not have seen (written before it
// took its starting point).
func (pw *progressWatch) catchUp() {
	pw.mu.Lock()
	pw.readFileLocked()
	pw.mu.Unlock()
	pw.notify()
}

// readFileLocked gives p the file's records since the request, in time
// order (those it has seen already it leaves out).
func (pw *progressWatch) readFileLocked() {
	recs, _, err := events.ReadFile(pw.path)
	if err != nil {
		return
	}
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Time.Before(recs[j].Time) })
	for _, r := range recs {
		if !r.Time.Before(pw.p.start) {
			pw.p.record(r)
		}
	}
}

// notify wakes finish's wait for the old generation's end.
func (pw *progressWatch) notify() {
	select {
	case pw.changed <- struct{}{}:
	default:
	}
}

// finish prints the steps recorded by the time the service answered and,
// after a successful upgrade, waits for the old generation's drain (until
// ctx ends or the user interrupts: the upgrade is done either way).
func (pw *progressWatch) finish(ctx context.Context, ok bool) {
	defer func() {
		pw.cancel()
		<-pw.done
	}()
	pw.catchUp()
	pw.mu.Lock()
	waits := ok && pw.p.waits()
	old := pw.p.old
	pw.mu.Unlock()
	if !waits {
		return
	}
	fmt.Fprintf(pw.p.w, "  %9s  %-12s waiting for pid %d to finish its in-flight work (Ctrl-C stops waiting; the upgrade is done)\n", "", "draining", old)
	ictx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	for {
		select {
		case <-pw.changed:
			pw.mu.Lock()
			waits = pw.p.waits()
			pw.mu.Unlock()
			if !waits {
				return
			}
		case <-ictx.Done():
			fmt.Fprintf(pw.p.w, "  %9s  %-12s pid %d still drains: baton events --name %s -f shows its end\n", "", "", old, pw.p.name)
			return
		}
	}
}

// isTerminal reports whether w is a terminal (progress is shown there
// only: pipes and files get the output they always had).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminalFd(f.Fd())
}
