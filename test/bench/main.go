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
// Figures come from one run on this machine; compare ratios, not absolute
// numbers, across machines.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/scenario"
)

func main() {
	upgrades := flag.Int("upgrades", 30, "number of upgrades in each mode")
	interval := flag.Duration("interval", 500*time.Millisecond, "time between upgrades")
	startup := flag.Duration("startup-delay", 0, "pretend app start-up work in hello")
	flag.Parse()
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
			Upgrades: *upgrades, Interval: *interval,
			Workers: map[loadgen.Kind]int{
				loadgen.KeepAliveGET: 8, loadgen.KeepAlivePOST: 8, loadgen.Fresh: 4, loadgen.Slow: 4,
			},
			IdleGrace: time.Second, DrainTimeout: 10 * time.Second, StartupDelay: *startup,
			Supervised: m.supervised, Peer: m.peer,
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench failed (%s): %v\n", m.short, err)
			os.Exit(1)
		}
		report(res, m.title, *interval, *startup, m.supervised, m.peer != "")
		rows = append(rows, summary{m.short, res})
		if m.peer != scenario.PeerTableflip {
			failed = failed || res.Load.TotalFailed() != 0
		}
	}
	compare(rows)
	if failed {
		fmt.Fprintln(os.Stderr, "bench: baton lost requests during upgrades")
		os.Exit(1)
	}
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
