// Command bench is `make bench`: examples/hello under the mixed load with an
// upgrade every 500 ms; it prints failed requests per upgrade by kind, the
// switch time, baton's own part of it, and how long old generations live
// after their last response. Figures come from one run on this machine;
// compare ratios, not absolute numbers, across machines.
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
	upgrades := flag.Int("upgrades", 30, "number of upgrades")
	interval := flag.Duration("interval", 500*time.Millisecond, "time between upgrades")
	startup := flag.Duration("startup-delay", 0, "pretend app start-up work in hello")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := scenario.Run(ctx, scenario.Config{
		Upgrades: *upgrades, Interval: *interval,
		Workers: map[loadgen.Kind]int{
			loadgen.KeepAliveGET: 8, loadgen.KeepAlivePOST: 8, loadgen.Fresh: 4, loadgen.Slow: 4,
		},
		IdleGrace: time.Second, DrainTimeout: 10 * time.Second, StartupDelay: *startup,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench failed:", err)
		os.Exit(1)
	}
	n := float64(len(res.Upgrades))
	fmt.Printf("baton bench: %d upgrades, one every %v, hello start-up delay %v\n\n", len(res.Upgrades), *interval, *startup)
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
	row("  app's own start-up (init -> Ready)", func(u scenario.Upgrade) time.Duration { return u.AppStartup })
	row("  baton overhead (switch - app start-up)", scenario.Upgrade.Overhead)
	row("old generation exit after handover", func(u scenario.Upgrade) time.Duration { return u.OldExit })
	row("old generation exit after its last response", func(u scenario.Upgrade) time.Duration { return u.AfterLast })
	if res.Load.TotalFailed() != 0 {
		os.Exit(1)
	}
}
