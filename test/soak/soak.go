//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proctest"
	"github.com/baton-go/baton/internal/sockstat"
	"github.com/baton-go/baton/test/faults/rig"
)

// Targets are the binaries the soak needs.
func Targets() map[string]rig.Target {
	return map[string]rig.Target{
		"baton":    {Pkg: "./cmd/baton"},
		"hello-v1": {Pkg: "./examples/hello", Flags: []string{"-ldflags", "-X main.buildVersion=v1"}},
	}
}

// Bounds: how much the last window's average may exceed the first's.
// Generations are fresh processes: what they inherit (descriptors, state)
// is all that could pile up, so their figures stay within noise (the
// goroutine count moves with the connections the load holds at the
// moment of the sample). The supervisor lives throughout: its heap may
// settle higher once, not grow with the count; its goroutines move with
// the generations still draining at the sample (each has its link's),
// as its threads do.
var Bounds = map[string]float64{
	"gen fds":        1.25, // not counting client connections
	"gen goroutines": 1.25, // not counting client connections' (one each)
	"gen RSS KiB":    1.25,
	"sup fds":        1.25,
	"sup goroutines": 1.5,
	"sup threads":    1.5,
	"sup RSS KiB":    1.5,
	"runtime files":  1.25,
}

// Sample is what is read after one upgrade.
type Sample struct {
	Values map[string]float64
}

// Result is one mode's soak.
type Result struct {
	Mode                rig.Mode
	Upgrades, Busy      int
	Took                time.Duration
	Load                loadgen.Report
	Idle                *loadgen.Report    // the idle clients' (Config.IdleClients), if any
	First, Last         map[string]float64 // averages over the windows
	Window              int
	Left                int // old generations still running at the end
	Violations          []string
	SupPID, LastGenPID  int
	FirstGen, LastGenNo int
}

// Config is one soak run.
type Config struct {
	Mode     rig.Mode
	Upgrades int
	Progress io.Writer
	// IdleClients keep-alive clients that POST once every Think (their
	// first requests spread over Think): idle at most handovers, their
	// connections move from generation to generation (issue 11).
	IdleClients int
	Think       time.Duration
}

// window is how many upgrades the first and last averages cover.
func window(n int) int { return max(1, min(100, n/4)) }

// Run soaks one mode: cfg.Upgrades upgrades back to back under load.
func Run(ctx context.Context, env *rig.Env, cfg Config, name string) (*Result, error) {
	say := func(format string, a ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, format+"\n", a...)
		}
	}
	// hello's default idle grace (2 s): an old generation whose clients
	// all moved on exits before it. A shorter grace (100 ms was tried)
	// closes keep-alive connections whose client was held up longer than
	// that on this busy machine, and their next POST is lost (the race
	// the grace is there for).
	o := rig.Opts{Hello: []string{"-debug-goroutines", "-drain-timeout", "5s", "-max-draining", "64"}}
	var metricsAddr string
	if cfg.Mode == rig.Run {
		// The supervisor's goroutines are read from its own metrics
		// (go_goroutines); nothing else reports them.
		addr, err := rig.FreeAddr()
		if err != nil {
			return nil, err
		}
		metricsAddr = addr
		o.Run = []string{"--drain-timeout", "6s", "--max-draining", "64", "--metrics", metricsAddr}
	}
	svc, err := env.Start(ctx, cfg.Mode, name, o)
	if err != nil {
		return nil, err
	}
	defer svc.Stop()
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: svc.Addr, MaxRequests: 200_000_000,
		Workers: map[loadgen.Kind]int{loadgen.KeepAlivePOST: 4, loadgen.Fresh: 2}})
	if err != nil {
		return nil, err
	}
	defer load.Stop()
	var idle *loadgen.Load
	if cfg.IdleClients > 0 {
		idle, err = loadgen.Start(ctx, loadgen.Config{Addr: svc.Addr, MaxRequests: 200_000_000, Pause: cfg.Think, Stagger: cfg.Think,
			Timeout: 30 * time.Second, Workers: map[loadgen.Kind]int{loadgen.KeepAlivePOST: cfg.IdleClients}})
		if err != nil {
			return nil, err
		}
		defer idle.Stop()
	}
	pid := svc.Serving(ctx)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ok := rig.WaitAnswers(wctx, load, pid, 20)
	cancel()
	if !ok {
		return nil, fmt.Errorf("pid %d does not answer the load", pid)
	}
	res := &Result{Mode: cfg.Mode, Upgrades: cfg.Upgrades, Window: window(cfg.Upgrades), SupPID: svc.SupPID}
	var first, last []Sample
	start := time.Now()
	var pids []int
	for i := 0; i < cfg.Upgrades; i++ {
		var rep proctest.UpgradeReport
		for {
			rep, err = svc.Upgrade(ctx)
			if err != nil {
				return nil, fmt.Errorf("upgrade %d: %w", i+1, err)
			}
			if rep.ExitCode == 4 && (rep.Code == contract.CodeTooMany || rep.Code == contract.CodeBusy) {
				res.Busy++ // old generations still drain: retry shortly
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(20 * time.Millisecond):
				}
				continue
			}
			break
		}
		if !rep.OK || rep.Result == nil {
			return nil, fmt.Errorf("upgrade %d: exit %d %s: %s\n%s", i+1, rep.ExitCode, rep.Code, rep.Error, svc.LogTail(3000))
		}
		pids = append(pids, pid)
		pid = rep.Result.PID
		if i == 0 {
			res.FirstGen = rep.Result.Generation
		}
		res.LastGenNo = rep.Result.Generation
		if i < res.Window || i >= cfg.Upgrades-res.Window {
			s, err := sample(ctx, env, svc, pid, metricsAddr)
			if err != nil {
				return nil, fmt.Errorf("upgrade %d: %w", i+1, err)
			}
			if i < res.Window {
				first = append(first, s)
			} else {
				last = append(last, s)
			}
		}
		if (i+1)%500 == 0 {
			r := load.Snapshot()
			say("  %s: %d/%d upgrades, %v, requests ok %d failed %d", cfg.Mode, i+1, cfg.Upgrades, time.Since(start).Round(time.Second), r.TotalOK(), r.TotalFailed())
		}
		// Keep the tracker's set small: generations that are gone are
		// forgotten by the reaper, the rest are watched.
		if len(pids) > 64 {
			pids = reapGone(env, pids)
		}
		select {
		case <-load.Done():
			return nil, fmt.Errorf("the load ended early (upgrade %d)", i+1)
		default:
		}
	}
	res.Took = time.Since(start)
	res.LastGenPID = pid
	wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	rig.WaitAnswers(wctx, load, pid, 20)
	cancel()
	res.Load = load.Stop()
	if idle != nil {
		r := idle.Stop()
		res.Idle = &r
	}
	wctx, cancel = context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, p := range pids {
		if _, err := env.Tracker.WaitExit(wctx, p); err != nil {
			res.Left++
		}
	}
	res.First, res.Last = average(first), average(last)
	for k, bound := range Bounds {
		f, l := res.First[k], res.Last[k]
		if _, ok := res.First[k]; !ok {
			continue
		}
		if f > 0 && l/f > bound {
			res.Violations = append(res.Violations, fmt.Sprintf("%s grew %.2fx (%.1f -> %.1f), bound %.2fx", k, l/f, f, l, bound))
		}
	}
	return res, nil
}

// reapGone drops the pids that have exited (the tracker reaps them).
func reapGone(env *rig.Env, pids []int) []int {
	var out []int
	for _, p := range pids {
		if _, gone := env.Tracker.Exited(p); !gone {
			out = append(out, p)
		}
	}
	return out
}

func average(ss []Sample) map[string]float64 {
	out := map[string]float64{}
	if len(ss) == 0 {
		return out
	}
	for _, s := range ss {
		for k, v := range s.Values {
			out[k] += v
		}
	}
	for k := range out {
		out[k] /= float64(len(ss))
	}
	return out
}

// sample reads the serving generation's descriptors, RSS and goroutines,
// the supervisor's descriptors, RSS and threads, its goroutines from
// metricsAddr (baton run --metrics; "" in library mode), and the files in
// the runtime directory.
func sample(ctx context.Context, env *rig.Env, svc *rig.Svc, pid int, metricsAddr string) (Sample, error) {
	s := Sample{Values: map[string]float64{}}
	// Client connections come and go with the load (idle clients' move in
	// right after the switch), each with its descriptor and goroutine:
	// what must stay flat is the rest. Descriptors, goroutines and the
	// connection count are read until the count is the same before and
	// after (a snapshot no connection moved through).
	port := 0
	if _, p, err := net.SplitHostPort(svc.Addr); err == nil {
		port, _ = strconv.Atoi(p)
	}
	var fds, g, conns int
	for try := 0; ; try++ {
		before, err := sockstat.Conns(pid, []int{port}, nil)
		if err != nil {
			return s, fmt.Errorf("connections of pid %d: %w", pid, err)
		}
		if fds, err = proctest.CountFDs(pid); err != nil {
			return s, fmt.Errorf("fds of pid %d: %w", pid, err)
		}
		if g, err = goroutines(ctx, svc.Addr, pid); err != nil {
			return s, err
		}
		after, err := sockstat.Conns(pid, []int{port}, nil)
		if err != nil {
			return s, fmt.Errorf("connections of pid %d: %w", pid, err)
		}
		conns = after
		if before == after || try == 50 {
			break
		}
		pace(5 * time.Millisecond) // connections still moving in: sample again
	}
	u, err := proctest.ReadUsage(pid)
	if err != nil {
		return s, err
	}
	s.Values["gen fds"] = float64(fds - conns)
	s.Values["gen RSS KiB"] = float64(u.RSSKiB)
	s.Values["gen goroutines"] = float64(g - conns)
	if svc.SupPID > 0 {
		fds, err := proctest.CountFDs(svc.SupPID)
		if err != nil {
			return s, err
		}
		u, err := proctest.ReadUsage(svc.SupPID)
		if err != nil {
			return s, err
		}
		s.Values["sup fds"] = float64(fds)
		s.Values["sup RSS KiB"] = float64(u.RSSKiB)
		s.Values["sup threads"] = float64(threads(svc.SupPID))
	}
	if metricsAddr != "" {
		g, err := supGoroutines(ctx, metricsAddr)
		if err != nil {
			return s, err
		}
		s.Values["sup goroutines"] = g
	}
	ents, _ := os.ReadDir(env.RuntimeDir())
	s.Values["runtime files"] = float64(len(ents))
	return s, nil
}

// pace spaces samples (not a synchronisation: sample loops until what
// they read is consistent).
func pace(d time.Duration) { time.Sleep(d) }

// goroutines asks hello (-debug-goroutines) for its goroutine count; the
// answer must come from pid (an old generation may still take a
// connection right after the handover: asked again).
func goroutines(ctx context.Context, addr string, pid int) (int, error) {
	for try := 0; try < 50; try++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return 0, err
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET /debug/goroutines HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			return 0, err
		}
		b, _ := io.ReadAll(resp.Body)
		c.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("/debug/goroutines: %s (hello without -debug-goroutines?)", resp.Status)
		}
		if resp.Header.Get("X-Pid") == strconv.Itoa(pid) {
			return strconv.Atoi(strings.TrimSpace(string(b)))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("pid %d never answered /debug/goroutines", pid)
}

// scrapeClient opens a connection per scrape, so the supervisor never
// counts an idle keep-alive connection's goroutine in one sample and not
// in another.
var scrapeClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// supGoroutines is go_goroutines in a scrape of the supervisor's metrics
// at addr (counting the goroutine that answers the scrape).
func supGoroutines(ctx context.Context, addr string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scraping the supervisor's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scraping the supervisor's metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("the supervisor's metrics: %w", err)
	}
	mf := mfs["go_goroutines"]
	if mf == nil || len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetGauge() == nil {
		return 0, fmt.Errorf("the supervisor's metrics have no go_goroutines gauge")
	}
	return mf.GetMetric()[0].GetGauge().GetValue(), nil
}

// threads is the Threads: line of /proc/PID/status.
func threads(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// Print writes a mode's figures.
func Print(w io.Writer, r *Result) {
	fmt.Fprintf(w, "%s: %d upgrades in %v (%.1f ms each), generations %d..%d, %d answered busy and retried\n",
		r.Mode, r.Upgrades, r.Took.Round(time.Second), float64(r.Took.Milliseconds())/float64(max(r.Upgrades, 1)), r.FirstGen, r.LastGenNo, r.Busy)
	fmt.Fprintf(w, "  requests: %d ok, %s failed; old generations left running: %d\n", r.Load.TotalOK(), rig.Failed(r.Load), r.Left)
	if r.Idle != nil {
		fmt.Fprintf(w, "  idle clients' requests: %d ok, %s failed\n", r.Idle.TotalOK(), rig.Failed(*r.Idle))
		for i, f := range r.Idle.Failures {
			if i == 10 {
				break
			}
			fmt.Fprintf(w, "  FAILED (idle) +%v %s %s pid=%d: %s\n", f.At.Sub(r.Idle.Start).Round(time.Millisecond), f.Kind, f.Phase, f.PID, f.Err)
		}
	}
	fmt.Fprintf(w, "  %-16s %12s %12s %8s %8s   (averages over the first and the last %d upgrades)\n", "", "first", "last", "ratio", "bound", r.Window)
	for _, k := range []string{"gen fds", "gen goroutines", "gen RSS KiB", "sup fds", "sup goroutines", "sup threads", "sup RSS KiB", "runtime files"} {
		f, ok := r.First[k]
		if !ok {
			continue
		}
		l := r.Last[k]
		ratio := 0.0
		if f > 0 {
			ratio = l / f
		}
		fmt.Fprintf(w, "  %-16s %12.1f %12.1f %8.2f %8.2f\n", k, f, l, ratio, Bounds[k])
	}
	for i, f := range r.Load.Failures {
		if i == 10 {
			break
		}
		fmt.Fprintf(w, "  FAILED +%v %s %s pid=%d: %s\n", f.At.Sub(r.Load.Start).Round(time.Millisecond), f.Kind, f.Phase, f.PID, f.Err)
	}
	for _, v := range r.Violations {
		fmt.Fprintf(w, "  GREW: %s\n", v)
	}
}

// Failed reports whether a mode's soak failed: a failed request, an old
// generation left running, or a figure over its bound.
func (r *Result) Failed() bool {
	return r.Load.TotalFailed() != 0 || (r.Idle != nil && r.Idle.TotalFailed() != 0) || r.Left != 0 || len(r.Violations) != 0
}
