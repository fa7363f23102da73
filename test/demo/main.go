// Command demo is `make demo`: it serves examples/hello on loopback, upgrades
// it a handful of times under a load of clients that never retry, then
// tries to upgrade to a broken release, and prints what happened.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/scenario"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	fmt.Println("baton demo: 6 upgrades of examples/hello under load, then one broken release")
	res, err := scenario.Run(ctx, scenario.Config{
		Upgrades: 6, Interval: time.Second,
		Workers: map[loadgen.Kind]int{
			loadgen.KeepAliveGET: 4, loadgen.KeepAlivePOST: 4, loadgen.Fresh: 4, loadgen.Slow: 2,
		},
		IdleGrace: time.Second, DrainTimeout: 10 * time.Second,
		FailingLast: true, Progress: os.Stdout,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
	fmt.Println()
	fmt.Println("requests (no client ever retries):")
	fmt.Print(res.Load.String())
	fmt.Println()
	fmt.Printf("switch time (trigger -> first response from the new pid): %s\n",
		scenario.Summarize(res.Upgrades, func(u scenario.Upgrade) time.Duration { return u.Switch }))
	fmt.Printf("old generation gone after its last response:              %s\n",
		scenario.Summarize(res.Upgrades, func(u scenario.Upgrade) time.Duration { return u.AfterLast }))
	if f := res.Failing; f != nil {
		fmt.Printf("\nbroken release: `baton upgrade` exited %d (%s)\n  %s\n", f.ExitCode, f.Code, f.Error)
		fmt.Printf("  the running generation kept serving; requests lost meanwhile: %d\n", res.FailingLost)
	}
	failed := res.Load.TotalFailed()
	fmt.Printf("\n%d requests, %d failed across %d upgrades\n", res.Load.TotalOK()+failed, failed, len(res.Upgrades))
	if failed != 0 {
		os.Exit(1)
	}
}
