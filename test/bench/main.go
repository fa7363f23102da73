// Command bench is `make bench`: examples/hello under the mixed load with an
// upgrade every 500 ms, first stand-alone (the library), then under
// `baton run` (the supervisor); it prints failed requests per upgrade by
// kind, the switch time, baton's own part of it, how long old generations
// live after their last response, and the supervisor's footprint at idle.
// Figures come from one run on this machine; compare ratios, not absolute
// numbers, across machines.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
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
	for _, supervised := range []bool{false, true} {
		res, err := scenario.Run(ctx, scenario.Config{
			Upgrades: *upgrades, Interval: *interval,
			Workers: map[loadgen.Kind]int{
				loadgen.KeepAliveGET: 8, loadgen.KeepAlivePOST: 8, loadgen.Fresh: 4, loadgen.Slow: 4,
			},
			IdleGrace: time.Second, DrainTimeout: 10 * time.Second, StartupDelay: *startup,
			Supervised: supervised,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench failed:", err)
			os.Exit(1)
		}
		mode := "stand-alone (library handoff, upgrades through the service's own control endpoint)"
		if supervised {
			mode = "under `baton run` (sockets owned by the supervisor, socket activation + link)"
		}
		report(res, mode, *interval, *startup, supervised)
		failed = failed || res.Load.TotalFailed() != 0
	}
	if failed {
		os.Exit(1)
	}
}

func report(res *scenario.Result, mode string, interval, startup time.Duration, supervised bool) {
	n := float64(len(res.Upgrades))
	fmt.Printf("baton bench, %s:\n%d upgrades, one every %v, hello start-up delay %v\n\n", mode, len(res.Upgrades), interval, startup)
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
	row("  new process start -> ready (baton's view)", func(u scenario.Upgrade) time.Duration { return u.ReadyAfter })
	if !supervised { // the supervisor does not learn the app's own start-up time
		row("  app's own start-up (init -> Ready)", func(u scenario.Upgrade) time.Duration { return u.AppStartup })
		row("  baton overhead (switch - app start-up)", scenario.Upgrade.Overhead)
	}
	row("old generation exit after handover", func(u scenario.Upgrade) time.Duration { return u.OldExit })
	row("old generation exit after its last response", func(u scenario.Upgrade) time.Duration { return u.AfterLast })
	if s := res.Supervisor; s != nil {
		fmt.Printf("%-46s RSS %.1f MiB, CPU %v over %v idle\n", "supervisor (pid "+fmt.Sprint(s.PID)+")", float64(s.RSSKiB)/1024, s.IdleCPU, s.IdleFor)
	}
	fmt.Println()
}
