package main

import (
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/baton-go/baton/internal/atomicfile"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/report"
	"github.com/spf13/cobra"
)

type reportFlags struct {
	name     string
	html     string
	json     bool
	upgrades int
	since    time.Duration
}

func newReportCmd() *cobra.Command {
	var f reportFlags
	c := &cobra.Command{
		Use:   "report --name NAME --html FILE [--upgrades N] [--since D]",
		Short: "Write a page with a timeline picture of a service's recent upgrades",
		Long: `Read the lifecycle records of the service NAME (see baton events) and write
FILE: one self-contained HTML page (no script, nothing fetched: it works
offline and can be mailed or attached to a ticket) with

  - an SVG timeline of the recent upgrades: one lane per generation,
    labelled with its generation number and pid, its phases in colour
    (starting, ready, serving, draining, exited, failed), a line at each
    switch, rollbacks and failed upgrades marked, a legend;
  - a table of the operations (upgrades, rollbacks, restarts, starts,
    stops) with their result and how long each step took: start, ready,
    handover, switch, and the old generation's drain.

The time axis is compressed (each gap between two steps is drawn by its
logarithm) so that a 2 ms handover and a 30 s drain both show; durations are
in the labels, the tooltips and the table.

With --json, the same timeline (operations with their durations in ns,
generations with their phases) is printed on stdout as well.

` + exitCodesHelp,
		Example: `  baton report --name web --html /tmp/web-upgrades.html
  baton report --name web --html - --upgrades 3 > last3.html`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runReport(cmd.OutOrStdout(), f)
		},
	}
	c.Flags().StringVarP(&f.name, "name", "n", "", "name of the service (its control endpoint) (required)")
	c.Flags().StringVar(&f.html, "html", "", "write the page to this file ('-': stdout) (required)")
	c.Flags().BoolVar(&f.json, "json", false, "print the timeline as JSON on stdout")
	c.Flags().IntVar(&f.upgrades, "upgrades", report.DefaultUpgrades, "show this many of the most recent operations (0 or less: all that are kept)")
	c.Flags().DurationVar(&f.since, "since", 0, "leave out records older than this (e.g. 24h)")
	_ = c.MarkFlagRequired("name")
	_ = c.MarkFlagRequired("html")
	return c
}

func runReport(out io.Writer, f reportFlags) error {
	if err := ctl.CheckName(f.name); err != nil {
		return &exitError{code: contract.CodeUsage, err: err}
	}
	if f.since < 0 {
		return &exitError{code: contract.CodeUsage, err: fmt.Errorf("--since %v must not be negative", f.since)}
	}
	if f.html == "-" && f.json {
		return &exitError{code: contract.CodeUsage, err: fmt.Errorf("--html - and --json would both write to stdout")}
	}
	path, err := eventsPath(f.name)
	if err != nil {
		return err
	}
	now := time.Now()
	var cutoff time.Time
	if f.since > 0 {
		cutoff = now.Add(-f.since)
	}
	recs, err := readEvents(path, cutoff)
	if err != nil {
		return err
	}
	n := f.upgrades
	if n <= 0 {
		n = -1 // all
	}
	tl := report.Build(recs, report.Options{Service: f.name, Upgrades: n, Now: now, Source: path, Location: time.Local})
	if f.html == "-" {
		if err := report.HTML(out, tl); err != nil {
			return &exitError{code: contract.CodeInternal, err: err}
		}
		return nil
	}
	file, err := filepath.Abs(f.html)
	if err != nil {
		return &exitError{code: contract.CodeUsage, err: err}
	}
	if err := atomicfile.Write(file, 0o644, func(w io.Writer) error { return report.HTML(w, tl) }); err != nil {
		return &exitError{code: contract.CodeFailed, err: fmt.Errorf("writing the report: %w", err)}
	}
	if f.json {
		printJSON(out, struct {
			Name string `json:"name"`
			File string `json:"file"`
			*report.Timeline
		}{f.name, file, tl})
		return nil
	}
	ok, failed, rolled := tl.Counts()
	fmt.Fprintf(out, "wrote %s: %d operations (%d succeeded, %d failed, %d rolled back), %d generations\n",
		file, len(tl.Upgrades), ok, failed, rolled, len(tl.Lanes))
	return nil
}
