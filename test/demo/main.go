// Command demo is `make demo`: it serves examples/hello on loopback, upgrades
// it a handful of times under a load of clients that never retry, then
// tries to upgrade to a broken release, prints what happened, and writes
// the timeline page of those upgrades (what `baton report` writes).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/atomicfile"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/report"
	"github.com/baton-go/baton/internal/scenario"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	fmt.Println("baton demo: 6 upgrades of examples/hello under load, then one broken release")
	rec := recordEvents(ctx)
	res, err := scenario.Run(ctx, scenario.Config{
		Upgrades: 6, Interval: time.Second,
		Workers: map[loadgen.Kind]int{
			loadgen.KeepAliveGET: 4, loadgen.KeepAlivePOST: 4, loadgen.Fresh: 4, loadgen.Slow: 2,
		},
		IdleGrace: time.Second, DrainTimeout: 10 * time.Second,
		FailingLast: true, Progress: os.Stdout,
	})
	page := rec.write()
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
	if page != "" {
		fmt.Printf("\ntimeline of these upgrades (baton report): %s\n", page)
	}
	if failed != 0 {
		os.Exit(1)
	}
}

// recorder keeps the service's event records while the scenario runs: it
// follows the events file in the runtime directory the scenario picks
// (scenario.Run sets BATON_RUNTIME_DIR before it starts anything, and
// removes the directory when it ends).
type recorder struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	recs   []events.Record
}

func recordEvents(ctx context.Context) *recorder {
	ctx, cancel := context.WithCancel(ctx)
	r := &recorder{cancel: cancel, done: make(chan struct{})}
	before := os.Getenv(contract.EnvRuntimeDir)
	go func() {
		defer close(r.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		dir := before
		for dir == before {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				dir = os.Getenv(contract.EnvRuntimeDir)
			}
		}
		events.Follow(ctx, events.Path(dir, "scenario"), 20*time.Millisecond, func(rec events.Record) {
			r.mu.Lock()
			r.recs = append(r.recs, rec)
			r.mu.Unlock()
		})
	}()
	return r
}

// write stops recording and writes the page; it returns its path ("" and
// a message on stderr when it could not).
func (r *recorder) write() string {
	r.cancel()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.recs) == 0 {
		fmt.Fprintln(os.Stderr, "demo: no event records were seen; no timeline written")
		return ""
	}
	tl := report.Build(r.recs, report.Options{Service: "scenario", Upgrades: -1, Location: time.Local, Source: "make demo"})
	path := filepath.Join(os.TempDir(), "baton-demo-report.html")
	if err := atomicfile.Write(path, 0o644, func(w io.Writer) error { return report.HTML(w, tl) }); err != nil {
		fmt.Fprintln(os.Stderr, "demo: writing the timeline:", err)
		return ""
	}
	return path
}
