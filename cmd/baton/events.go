package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/report"
	"github.com/spf13/cobra"
)

type eventsFlags struct {
	name   string
	follow bool
	json   bool
	since  time.Duration
}

func newEventsCmd() *cobra.Command {
	var f eventsFlags
	c := &cobra.Command{
		Use:   "events --name NAME [-f] [--json] [--since D]",
		Short: "List a service's lifecycle events (upgrades, readiness, handovers, drains, rollbacks) with their durations",
		Long: `Print the lifecycle records of the service NAME, oldest first: each upgrade,
rollback, restart, start and stop, and every step of it (a generation
started, got ready, took over, drained, failed, was rolled back), with how
long the step took. Both a baton run supervisor and every generation of a
library service append them to a bounded file beside the control endpoint
(` + "`RUNTIME_DIR/events/NAME.jsonl`" + `, rotated into NAME.jsonl.1 at 1 MiB), so
they outlive the processes. docs/events.md describes every field.

  --json     one record per line, as kept in the file (the OpenTelemetry-style
             names: event.name, deployment.id, process.pid, baton.generation,
             baton.duration_s, error.type...): a stable format for scripts
  --since D  only records from the last D (e.g. 10m, 24h)
  -f         then keep printing new records until interrupted

` + exitCodesHelp,
		Example: `  baton events --name web
  baton events --name web --since 1h --json | jq 'select(."event.name" == "baton.rolled_back")'
  baton events --name web -f`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			return runEvents(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	c.Flags().StringVarP(&f.name, "name", "n", "", "name of the service (its control endpoint) (required)")
	c.Flags().BoolVarP(&f.follow, "follow", "f", false, "keep printing new records until interrupted")
	c.Flags().BoolVar(&f.json, "json", false, "print each record as one line of JSON (the file's format)")
	c.Flags().DurationVar(&f.since, "since", 0, "only records newer than this (e.g. 30m)")
	_ = c.MarkFlagRequired("name")
	return c
}

func runEvents(ctx context.Context, out, errOut io.Writer, f eventsFlags) error {
	if err := ctl.CheckName(f.name); err != nil {
		return &exitError{code: contract.CodeUsage, err: err}
	}
	if f.since < 0 {
		return &exitError{code: contract.CodeUsage, err: fmt.Errorf("--since %v: a duration back from now must not be negative", f.since)}
	}
	var cutoff time.Time
	if f.since > 0 {
		cutoff = time.Now().Add(-f.since)
	}
	path, err := eventsPath(f.name)
	if err != nil && !f.follow {
		return err
	}
	var recs []events.Record
	if err == nil {
		recs, err = readEvents(path, cutoff)
		if err != nil {
			return err
		}
	} else {
		fmt.Fprintf(errOut, "baton: no events for %s yet; waiting for %s\n", f.name, path)
	}
	p := eventPrinter{w: out, json: f.json}
	if !f.json && (len(recs) > 0 || f.follow) {
		p.header()
	}
	for _, r := range recs {
		p.print(r)
	}
	if !f.follow {
		if len(recs) == 0 && !f.json {
			fmt.Fprintf(errOut, "baton: no events of %s in the last %v (in %s)\n", f.name, f.since, path)
		}
		return nil
	}
	return tailEvents(ctx, path, 200*time.Millisecond, cutoff, recs, p.print)
}

// readEvents reads the records kept at path (the rotated file first),
// from cutoff on, in time order (several processes append to the file:
// records written within the same instant may land out of order).
func readEvents(path string, cutoff time.Time) ([]events.Record, error) {
	all, _, err := events.ReadFile(path)
	if err != nil {
		code := contract.CodeInternal
		if errors.Is(err, os.ErrPermission) {
			code = contract.CodeUnreachable
			err = fmt.Errorf("%w (the service's owner or root may read its events)", err)
		}
		return nil, &exitError{code: code, err: fmt.Errorf("reading the events file: %w", err)}
	}
	recs := all[:0]
	for _, r := range all {
		if !r.Time.Before(cutoff) {
			recs = append(recs, r)
		}
	}
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Time.Before(recs[j].Time) })
	return recs, nil
}

// eventsPath is the events file of the service called name: the first of
// the places its records may be kept that has one. When none has, the
// error names every place looked at (and the path returned is where a
// service started now would write them).
func eventsPath(name string) (string, error) {
	dirs := eventsDirs(name)
	var looked []string
	for _, d := range dirs {
		p := events.Path(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		} else if errors.Is(err, os.ErrPermission) {
			return "", &exitError{code: contract.CodeUnreachable, err: fmt.Errorf("the events of %s at %s: %w (the service's owner or root may read them)", name, p, err)}
		}
		looked = append(looked, p)
	}
	return looked[0], &exitError{code: contract.CodeUnreachable, err: fmt.Errorf(
		"no events recorded for %s: no file at %s\na service writes its events there while it runs under that name (baton run --name, or the library's Options.Name); set %s if it runs with another runtime directory",
		name, strings.Join(looked, " nor "), contract.EnvRuntimeDir)}
}

// tailEvents calls fn for every record appended to path from now on,
// until ctx ends (events.Follow), and once, a moment after the start, for
// the records since cutoff that were not in already and that Follow could
// not see (appended between the caller's read and Follow's first look);
// when ctx ends, a last read reports the records newer than any reported
// that Follow had no time to see. Each record is reported once.
func tailEvents(ctx context.Context, path string, interval time.Duration, cutoff time.Time, already []events.Record, fn func(events.Record)) error {
	type key struct {
		at             int64
		name, dep, src string
		pid, gen       int
	}
	keyOf := func(r events.Record) key {
		return key{r.Time.UnixNano(), r.Name, r.Deployment, r.Source, r.PID, r.Generation}
	}
	seen := make(map[key]bool, len(already))
	for _, r := range already {
		seen[keyOf(r)] = true
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	followed := make(chan events.Record, 64)
	done := make(chan error, 1)
	go func() {
		done <- events.Follow(ctx, path, interval, func(r events.Record) {
			select {
			case followed <- r:
			case <-ctx.Done():
			}
		})
	}()
	var newest time.Time // of the records reported or already there
	report := func(r events.Record) {
		if r.Time.After(newest) {
			newest = r.Time
		}
		fn(r)
	}
	for _, r := range already {
		if r.Time.After(newest) {
			newest = r.Time
		}
	}
	read := func() []events.Record {
		recs, _, err := events.ReadFile(path)
		if err != nil {
			return nil // Follow goes on
		}
		sort.SliceStable(recs, func(i, j int) bool { return recs[i].Time.Before(recs[j].Time) })
		return recs
	}
	catchUp := time.NewTimer(3 * interval)
	defer catchUp.Stop()
	caughtUp := false
	for {
		select {
		case r := <-followed:
			k := keyOf(r)
			if seen[k] {
				continue
			}
			if !caughtUp {
				seen[k] = true // the catch-up must not report it again
			}
			report(r)
		case <-catchUp.C:
			caughtUp = true
			for _, r := range read() {
				if k := keyOf(r); !seen[k] && !r.Time.Before(cutoff) {
					seen[k] = true
					report(r)
				}
			}
		case err := <-done:
			for len(followed) > 0 {
				if r := <-followed; !seen[keyOf(r)] {
					report(r)
				}
			}
			for _, r := range read() {
				if r.Time.After(newest) && !r.Time.Before(cutoff) {
					report(r)
				}
			}
			return err
		}
	}
}

// eventPrinter prints records as a table (fixed columns, so that followed
// lines line up too) or as JSON lines.
type eventPrinter struct {
	w    io.Writer
	json bool
}

const eventFormat = "%-23s  %-24s %4s %7s  %-8s  %-8s  %8s  %s\n"

func (p eventPrinter) header() {
	fmt.Fprintf(p.w, eventFormat, "TIME", "EVENT", "GEN", "PID", "OP", "DEPLOY", "TOOK", "WHAT")
}

func (p eventPrinter) print(r events.Record) {
	if p.json {
		b, err := json.Marshal(r)
		if err == nil {
			fmt.Fprintf(p.w, "%s\n", b)
		}
		return
	}
	num := func(n int) string {
		if n == 0 {
			return "-"
		}
		return strconv.Itoa(n)
	}
	or := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	took := "-"
	if r.Duration > 0 {
		took = report.Duration(r.Took())
	}
	dep := r.Deployment
	if len(dep) > 8 {
		dep = dep[:8]
	}
	what := r.Message
	if r.Error != "" {
		e := r.Error
		if i := strings.IndexByte(e, '\n'); i >= 0 {
			e = e[:i] + " …"
		}
		what += ": " + e
	}
	fmt.Fprintf(p.w, eventFormat, r.Time.Local().Format("2006-01-02 15:04:05.000"), strings.TrimPrefix(r.Name, "baton."),
		num(r.Generation), num(r.PID), or(r.Operation), or(dep), took, what)
}

// eventLogIDs are the Windows Event Log event ids of the lifecycle records
// (the Windows service writes every record there too, source NAME,
// Application log; its own log lines are ids 1-3). One id per step, so
// that Event Viewer and Get-WinEvent can filter on it.
var eventLogIDs = map[string]uint32{
	events.UpgradeStarted:  100,
	events.Started:         101,
	events.Ready:           102,
	events.StartFailed:     103,
	events.Switched:        104,
	events.Serving:         105,
	events.UpgradeFailed:   106,
	events.ProbationPassed: 107,
	events.ProbationFailed: 108,
	events.RolledBack:      109,
	events.Crashed:         110,
	events.GaveUp:          111,
	events.FallingBack:     112,
	events.Drained:         113,
	events.Killed:          114,
	events.Stopping:        115,
	events.ControlRequest:  116,
}

// eventLogOther is the id of a record whose name has no id of its own (a
// newer baton's).
const eventLogOther = 199

// eventLogEntry is how record r goes to the Windows Event Log: its id, its
// type (error for a service that gave up, warning for a record with an
// error, else information), and its text: the record's message, then the
// record itself as the one JSON line of the events file.
func eventLogEntry(r events.Record) (id uint32, typ string, text string) {
	id, ok := eventLogIDs[r.Name]
	if !ok {
		id = eventLogOther
	}
	typ = "info"
	switch {
	case r.Name == events.GaveUp || r.Level == "ERROR":
		typ = "error"
	case r.Error != "" || r.Level == "WARN":
		typ = "warning"
	}
	b, err := json.Marshal(r)
	if err != nil {
		return id, typ, r.Message
	}
	msg := r.Message
	if msg == "" {
		msg = r.Name
	}
	return id, typ, msg + "\r\n\r\n" + string(b)
}
