// Command bench is `make bench`: examples/hello under the mixed load with an
// upgrade every 500 ms, first stand-alone (the library), then under
// `baton run` (the supervisor); it prints failed requests per upgrade by
// kind, the switch time, baton's own part of it, how long old generations
// live after their last response, and the supervisor's footprint at idle.
// Then the best-known peer, cloudflare/tableflip (test/bench/peers/tableflip,
// its own module), runs under the same load with a SIGHUP at the same
// interval, drained the way its users drain (http.Server.Shutdown), and a
// short table compares the three. Only baton's failed requests make the
// command fail; the peer's are printed.
//
// The "idle clients" block (issue 11) follows: hello with its default
// flags, many keep-alive clients that each send a non-retried POST and
// then stay idle longer than any idle grace (-idle-think), an upgrade every
// -idle-interval, in library mode (idle connections migrate to the new
// generation), under `baton run` (the supervisor relays them) and with
// tableflip. baton's failed requests make it fail, the peer's are printed.
//
// The "proxy" block (issue 12) measures proxy mode's cost: wrk against
// hello served directly, behind `baton run --proxy http`, behind `--proxy
// tcp` and behind nginx, in rounds whose order rotates; each ratio is to
// direct in the same round (test/bench/proxy.go).
//
// `-only upgrades|idle|proxy` runs one block alone.
//
// Figures come from one run on this machine; compare ratios, not absolute
// numbers, across machines.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/scenario"
)

func main() {
	only := flag.String("only", "", `run one block: "upgrades" (mixed load, upgrade every -interval), "idle" (idle keep-alive clients) or "proxy" (wrk against direct, baton --proxy http|tcp and nginx); default all`)
	px := proxyFlags()
	upgrades := flag.Int("upgrades", 30, "number of upgrades in each mode")
	interval := flag.Duration("interval", 500*time.Millisecond, "time between upgrades")
	startup := flag.Duration("startup-delay", 0, "pretend app start-up work in hello")
	var idle idleConfig
	flag.IntVar(&idle.clients, "idle-clients", 10_000, "idle block: keep-alive clients (fewer when the open-files limit is lower)")
	flag.DurationVar(&idle.think, "idle-think", 20*time.Second, "idle block: each client's idle time between two POSTs (their starts are spread over it too)")
	flag.DurationVar(&idle.interval, "idle-interval", 3*time.Second, "idle block: time between upgrades")
	flag.DurationVar(&idle.span, "idle-for", 45*time.Second, "idle block: how long upgrades go on")
	flag.StringVar(&idle.modes, "idle-modes", "library,run,tableflip", "idle block: the modes to run, comma-separated")
	flag.StringVar(&idle.logs, "idle-logs", "", "idle block: copy hello's log of each baton mode into this directory (idle-MODE.log)")
	flag.Parse()
	failed := false
	switch *only {
	case "":
		failed = runUpgrades(*upgrades, *interval, *startup)
		failed = runIdle(idle) || failed
		failed = runProxy(px) || failed
	case "upgrades":
		failed = runUpgrades(*upgrades, *interval, *startup)
	case "idle":
		failed = runIdle(idle)
	case "proxy":
		failed = runProxy(px)
	default:
		fmt.Fprintf(os.Stderr, "bench: -only %q: want upgrades, idle or proxy\n", *only)
		os.Exit(2)
	}
	if failed {
		fmt.Fprintln(os.Stderr, "bench: baton lost requests during upgrades, or a baton run did not complete (see above)")
		os.Exit(1)
	}
}

// runUpgrades is the mixed-load block; it reports whether baton lost
// requests.
func runUpgrades(upgrades int, interval, startup time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	failed := false
	modes := []struct {
		short, title string
		supervised   bool
		peer         string
	}{
		{"baton library", "baton bench, stand-alone (library handoff, upgrades through the service's own control endpoint)", false, ""},
		{"baton run", "baton bench, under `baton run` (sockets owned by the supervisor, socket activation + link)", true, ""},
		{"baton SIGHUP", "baton library upgraded like the peer: SIGHUP to the pid in its PID file (no CLI start in the switch time)", false, scenario.PeerBatonSignal},
		{"tableflip", "cloudflare/tableflip v1.2.3 (peer, its idiomatic http.Server.Shutdown drain)", false, scenario.PeerTableflip},
	}
	var rows []summary
	for _, m := range modes {
		res, err := scenario.Run(ctx, scenario.Config{
			Upgrades: upgrades, Interval: interval,
			Workers: map[loadgen.Kind]int{
				loadgen.KeepAliveGET: 8, loadgen.KeepAlivePOST: 8, loadgen.Fresh: 4, loadgen.Slow: 4,
			},
			IdleGrace: time.Second, DrainTimeout: 10 * time.Second, StartupDelay: startup,
			Supervised: m.supervised, Peer: m.peer,
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench failed (%s): %v\n", m.short, err)
			os.Exit(1)
		}
		report(res, m.title, interval, startup, m.supervised, m.peer != "")
		rows = append(rows, summary{m.short, res})
		if m.peer != scenario.PeerTableflip {
			failed = failed || res.Load.TotalFailed() != 0
		}
	}
	compare(rows)
	return failed
}

type summary struct {
	name string
	res  *scenario.Result
}

// compare prints the final side-by-side table.
func compare(rows []summary) {
	fmt.Println("comparison (same load, same trigger interval, one run):")
	fmt.Printf("%-16s %9s %10s %16s %14s %20s\n", "", "upgrades", "refused", "failed requests", "failed/upgr.", "switch median")
	for _, r := range rows {
		n := len(r.res.Upgrades)
		per := 0.0
		if n > 0 {
			per = float64(r.res.Load.TotalFailed()) / float64(n)
		}
		sw := scenario.Summarize(r.res.Upgrades, func(u scenario.Upgrade) time.Duration { return u.Switch }).Median
		fmt.Printf("%-16s %9d %10d %16d %14.2f %20s\n", r.name, n, r.res.Refused, r.res.Load.TotalFailed(), per, sw.Round(100*time.Microsecond))
	}
	fmt.Println()
}

func report(res *scenario.Result, title string, interval, startup time.Duration, supervised, peer bool) {
	n := float64(len(res.Upgrades))
	fmt.Printf("%s:\n", title)
	if peer {
		fmt.Printf("%d upgrades; a SIGHUP every %v to the pid in its PID file: %d sent, %d refused", len(res.Upgrades), interval, res.Triggers, res.Refused)
		if res.Refused > 0 {
			fmt.Printf(" (first refusal: %q)", res.RefusedWhy)
		}
		fmt.Print("\n\n")
	} else {
		fmt.Printf("%d upgrades, one every %v, hello start-up delay %v\n\n", len(res.Upgrades), interval, startup)
	}
	fmt.Printf("%-16s %10s %8s %18s\n", "load kind", "requests", "failed", "failed/upgrade")
	kinds := make([]string, 0, len(res.Load.ByKind))
	for k := range res.Load.ByKind {
		kinds = append(kinds, string(k))
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		ks := res.Load.ByKind[loadgen.Kind(k)]
		fmt.Printf("%-16s %10d %8d %18.2f\n", k, ks.OK+ks.Failed, ks.Failed, float64(ks.Failed)/n)
	}
	fmt.Println()
	row := func(name string, f func(scenario.Upgrade) time.Duration) {
		fmt.Printf("%-46s %s\n", name, scenario.Summarize(res.Upgrades, f))
	}
	row("switch (trigger -> first new-pid response)", func(u scenario.Upgrade) time.Duration { return u.Switch })
	if !peer { // the peer's readiness is not visible from outside
		row("  new process start -> ready (baton's view)", func(u scenario.Upgrade) time.Duration { return u.ReadyAfter })
	}
	if !supervised && !peer { // the supervisor does not learn the app's own start-up time
		row("  app's own start-up (init -> Ready)", func(u scenario.Upgrade) time.Duration { return u.AppStartup })
		row("  baton overhead (switch - app start-up)", scenario.Upgrade.Overhead)
	}
	if peer {
		row("old generation exit after the new PID file", func(u scenario.Upgrade) time.Duration { return u.OldExit })
	} else {
		row("old generation exit after handover", func(u scenario.Upgrade) time.Duration { return u.OldExit })
	}
	row("old generation exit after its last response", func(u scenario.Upgrade) time.Duration { return u.AfterLast })
	if s := res.Supervisor; s != nil {
		fmt.Printf("%-46s RSS %.1f MiB, CPU %v over %v idle\n", "supervisor (pid "+fmt.Sprint(s.PID)+")", float64(s.RSSKiB)/1024, s.IdleCPU, s.IdleFor)
	}
	fmt.Println()
	failures(res)
}

// failures prints how the failed requests failed, grouped by kind, phase
// and error (from the first failures the load recorded).
func failures(res *scenario.Result) {
	if len(res.Load.Failures) == 0 {
		return
	}
	type key struct{ kind, phase, err string }
	count := map[key]int{}
	var keys []key
	for _, f := range res.Load.Failures {
		e := f.Err
		if i := strings.LastIndex(e, ": "); i >= 0 { // drop addresses, keep the cause
			e = e[i+2:]
		}
		k := key{string(f.Kind), f.Phase, e}
		if count[k] == 0 {
			keys = append(keys, k)
		}
		count[k]++
	}
	sort.Slice(keys, func(i, j int) bool { return count[keys[i]] > count[keys[j]] })
	fmt.Printf("FAILED REQUESTS: %d (the first %d, by kind, phase and error):\n", res.Load.TotalFailed(), len(res.Load.Failures))
	for _, k := range keys {
		fmt.Printf("  %5d  %-16s %-7s %s\n", count[k], k.kind, k.phase, k.err)
	}
	fmt.Println()
}

// idleConfig is the idle-clients block's flags.
type idleConfig struct {
	clients               int
	think, interval, span time.Duration
	modes, logs           string
}

// idleMode is one mode of the idle-clients block.
type idleMode struct {
	key, short, title string
	supervised        bool
	peer              string
	asserted          bool // its failed requests fail the command
}

var idleModes = []idleMode{
	{"library", "baton library", "baton library (idle connections migrate to the new generation)", false, "", true},
	{"run", "baton run", "baton run (the supervisor relays idle connections to the generation serving)", true, "", true},
	{"tableflip", "tableflip", "cloudflare/tableflip v1.2.3 (peer; http.Server.Shutdown closes idle connections at once), a SIGHUP every interval", false, scenario.PeerTableflip, false},
}

// runIdle is the idle-clients block (issue 11); it reports whether baton
// lost requests (or could not run).
func runIdle(c idleConfig) bool {
	n := c.clients
	const reserve = 1024 // the bench's own files, pipes, and dials in flight
	limitNote := ""
	if limit, err := scenario.RaiseOpenFiles(); err != nil {
		limitNote = fmt.Sprintf("open-files limit unknown (%v)", err)
	} else if uint64(n)+reserve > limit {
		n = max(int(limit)-reserve, 1)
		limitNote = fmt.Sprintf("FEWER CLIENTS: %d asked, %d run: the open-files limit (ulimit -n, hard) is %d and the bench keeps %d for itself", c.clients, n, limit, reserve)
	} else {
		limitNote = fmt.Sprintf("open-files limit %d", limit)
	}
	upgrades := int(c.span / c.interval)
	fmt.Printf("idle clients (issue 11): %d keep-alive clients, each sends a non-retried POST, then stays idle %v (first POSTs spread over %v);\n", n, c.think, c.think)
	fmt.Printf("once all are connected, an upgrade every %v for %v (%d upgrades). examples/hello with its default flags\n", c.interval, c.span, upgrades)
	fmt.Printf("(idle grace 2s, drain timeout 30s; the library keeps an old generation through its successor's 3s probation). %s\n\n", limitNote)
	if c.logs != "" {
		if err := os.MkdirAll(c.logs, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "bench: -idle-logs: %v\n", err)
			return true
		}
	}
	want := map[string]bool{}
	for _, m := range strings.Split(c.modes, ",") {
		want[strings.TrimSpace(m)] = true
	}
	failed := false
	var rows []idleRow
	for _, m := range idleModes {
		if !want[m.key] {
			continue
		}
		keepLog := ""
		if c.logs != "" && m.peer == "" {
			keepLog = filepath.Join(c.logs, "idle-"+m.key+".log")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		res, err := scenario.Run(ctx, scenario.Config{
			Upgrades: upgrades, Interval: c.interval,
			Workers: map[loadgen.Kind]int{loadgen.KeepAlivePOST: n},
			Pause:   c.think, Stagger: c.think, Warmup: c.think + time.Second,
			HelloDefaults: true, CountTaken: m.peer == "",
			Supervised: m.supervised, Peer: m.peer,
			KeepLog: keepLog,
		})
		cancel()
		if err != nil {
			fmt.Printf("%s:\nRUN FAILED: %v\n\n", m.title, err)
			failed = failed || m.asserted
			continue
		}
		idleReport(res, m, c.interval)
		rows = append(rows, idleRow{m, res})
		if m.asserted && res.Load.TotalFailed() != 0 {
			failed = true
		}
	}
	idleCompare(rows, n)
	return failed
}

// handoverOf is when u's old generation handed over: its logged drain
// start (hello) or the run's own view (the CLI's return, the peer's new
// PID file).
func handoverOf(u scenario.Upgrade) time.Time {
	if !u.DrainStart.IsZero() {
		return u.DrainStart
	}
	return u.Handover
}

// summarizeIf is scenario.Summarize over the upgrades keep accepts.
func summarizeIf(ups []scenario.Upgrade, keep func(scenario.Upgrade) bool, f func(scenario.Upgrade) time.Duration) (scenario.Stats, int) {
	var sel []scenario.Upgrade
	for _, u := range ups {
		if keep(u) {
			sel = append(sel, u)
		}
	}
	return scenario.Summarize(sel, f), len(sel)
}

func logged(u scenario.Upgrade) bool  { return !u.DrainStart.IsZero() }
func drained(u scenario.Upgrade) bool { return u.Migrated >= 0 }

func idleReport(res *scenario.Result, m idleMode, interval time.Duration) {
	fmt.Printf("%s:\n", m.title)
	ks := res.Load.ByKind[loadgen.KeepAlivePOST]
	fmt.Printf("%d upgrades", len(res.Upgrades))
	if m.peer != "" {
		fmt.Printf(" (%d SIGHUPs sent, %d refused", res.Triggers, res.Refused)
		if res.Refused > 0 {
			fmt.Printf(": %q", res.RefusedWhy)
		}
		fmt.Print(")")
	}
	fmt.Printf("; requests: %d ok, %d failed; latency of the ok ones p50 %v, p99 %v, max %v\n",
		ks.OK, ks.Failed, ks.P50.Round(10*time.Microsecond), ks.P99.Round(10*time.Microsecond), ks.Max.Round(10*time.Microsecond))
	row := func(name string, s scenario.Stats, of int) {
		fmt.Printf("  %-52s %s", name, s)
		if of != len(res.Upgrades) {
			fmt.Printf(" (%d of %d upgrades)", of, len(res.Upgrades))
		}
		fmt.Println()
	}
	all := func(scenario.Upgrade) bool { return true }
	s, k := summarizeIf(res.Upgrades, all, func(u scenario.Upgrade) time.Duration { return u.Switch })
	row("switch (trigger -> first new-pid response)", s, k)
	if m.peer == "" {
		var migrated, taken, perMax int
		perMin := -1
		unknown := 0
		for _, u := range res.Upgrades {
			if u.Migrated < 0 {
				unknown++
				continue
			}
			migrated += u.Migrated
			perMax = max(perMax, u.Migrated)
			if perMin < 0 || u.Migrated < perMin {
				perMin = u.Migrated
			}
			taken += max(u.ConnsTaken, 0)
		}
		fmt.Printf("  connections migrated (old generations' \"drained\" lines): %d in all, %d..%d per upgrade", migrated, max(perMin, 0), perMax)
		if unknown > 0 {
			fmt.Printf(", %d old generation(s) logged no drained line", unknown)
		}
		fmt.Printf("; taken (new generations' status conns_taken, read just before the next upgrade): %d\n", taken)
		s, k = summarizeIf(res.Upgrades, drained, func(u scenario.Upgrade) time.Duration { return u.DrainDone })
		row("old generation: drain finished after the handover", s, k)
		s, k = summarizeIf(res.Upgrades, logged, func(u scenario.Upgrade) time.Duration { return u.DrainExit })
		row("old generation: process exit after the handover", s, k)
	} else {
		s, k = summarizeIf(res.Upgrades, all, func(u scenario.Upgrade) time.Duration { return u.OldExit })
		row("old generation: process exit after the new PID file", s, k)
	}
	s, k = summarizeIf(res.Upgrades, all, func(u scenario.Upgrade) time.Duration { return u.AfterLast })
	row("old generation: process exit after its last response", s, k)
	fmt.Println()
	failures(res)
	failureTiming(res, interval)
}

// failureTiming places the recorded failures relative to the latest
// handover before each: how long after it, and whether the connection's
// last answer came from that handover's old generation.
func failureTiming(res *scenario.Result, interval time.Duration) {
	if len(res.Load.Failures) == 0 || len(res.Upgrades) == 0 {
		return
	}
	ups := append([]scenario.Upgrade(nil), res.Upgrades...)
	sort.Slice(ups, func(i, j int) bool { return handoverOf(ups[i]).Before(handoverOf(ups[j])) })
	const bucket = 250 * time.Millisecond
	nb := int(interval/bucket) + 1
	counts := make([]int, nb)
	before := 0
	var conn [4]int // old generation of that handover, an older one, a newer one, none (a dial)
	for _, f := range res.Load.Failures {
		i := sort.Search(len(ups), func(i int) bool { return handoverOf(ups[i]).After(f.At) }) - 1
		if i < 0 {
			before++
			continue
		}
		counts[min(int(f.At.Sub(handoverOf(ups[i]))/bucket), nb-1)]++
		switch {
		case f.PID == 0:
			conn[3]++
		case f.PID == ups[i].OldPID:
			conn[0]++
		case f.PID == ups[i].NewPID:
			conn[2]++
		default:
			conn[1]++
		}
	}
	fmt.Printf("  when (the first %d failures, time since the latest handover before each, %v buckets):", len(res.Load.Failures), bucket)
	if before > 0 {
		fmt.Printf(" before the first handover was seen: %d;", before)
	}
	for b, c := range counts {
		if c > 0 {
			lo := time.Duration(b) * bucket
			if b == nb-1 {
				fmt.Printf(" >=%v: %d", lo, c)
			} else {
				fmt.Printf(" %v-%v: %d", lo, lo+bucket, c)
			}
		}
	}
	fmt.Printf("\n  on a connection last answered by: that handover's old generation %d, an older one %d, the new one %d, none yet (dial) %d\n\n",
		conn[0], conn[1], conn[2], conn[3])
}

type idleRow struct {
	mode idleMode
	res  *scenario.Result
}

// idleCompare prints the idle block's side-by-side table.
func idleCompare(rows []idleRow, clients int) {
	if len(rows) == 0 {
		return
	}
	fmt.Printf("idle clients, comparison (%d clients, one run):\n", clients)
	fmt.Printf("%-14s %8s %11s %8s %9s %22s %22s\n", "", "upgrades", "requests ok", "failed", "migrated", "drain done med / p90", "old exit med / p90")
	r := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	for _, row := range rows {
		ups := row.res.Upgrades
		migrated, done := "-", "-"
		var exit scenario.Stats
		if row.mode.peer == "" {
			m := 0
			for _, u := range ups {
				m += max(u.Migrated, 0)
			}
			migrated = fmt.Sprint(m)
			s, _ := summarizeIf(ups, drained, func(u scenario.Upgrade) time.Duration { return u.DrainDone })
			done = r(s.Median) + " / " + r(s.P90)
			exit, _ = summarizeIf(ups, logged, func(u scenario.Upgrade) time.Duration { return u.DrainExit })
		} else {
			exit = scenario.Summarize(ups, func(u scenario.Upgrade) time.Duration { return u.OldExit })
		}
		fmt.Printf("%-14s %8d %11d %8d %9s %22s %22s\n", row.mode.short, len(ups), row.res.Load.TotalOK(), row.res.Load.TotalFailed(),
			migrated, done, r(exit.Median)+" / "+r(exit.P90))
	}
	fmt.Println("(after the handover: drain done, the old generation's httpdrain finished; old exit, its process gone (tableflip: after its new PID file))")
	fmt.Println()
}
