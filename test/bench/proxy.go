package main

// The "proxy" block (issue 12): what proxy mode costs. examples/hello is
// served four ways at once (direct; under `baton run --proxy http`; under
// `baton run --proxy tcp`; behind nginx as a reverse proxy with upstream
// keep-alive, in front of the direct hello) and wrk loads one of them at a
// time with the same keep-alive load, in rounds whose order rotates, so
// that a busy machine slows all four alike. Each round's ratio is taken
// against the direct figure of the same round; the table shows medians.
//
// wrk, the proxies, the apps share the machine's cores: on a small machine
// a proxy's CPU is taken from the app and the load generator, so the
// ratios are those of a proxy without cores of its own. The CPU columns
// (the proxy process's own CPU per request, and the app's) say where the
// time goes independently of that. `go run ./test/bench -only proxy` runs
// this block alone.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/proctest"
)

// proxyConfig is the proxy block's flags.
type proxyConfig struct {
	conns, threads int
	span           time.Duration // of one wrk run
	rounds         int
	nginx          bool // compare with nginx (installed when missing)
}

// The targets: tcp at least 0.9× direct; http at least nginx's ratio.
const tcpTarget = 0.9

// proxyTarget is one way of serving hello.
type proxyTarget struct {
	key, title string
	url        string
	proxyPIDs  func() []int // the forwarding process(es); nil for direct
	appPID     int

	runs []wrkRun
}

// wrkRun is one wrk run's figures, with the CPU the processes used.
type wrkRun struct {
	reqs     int64
	rate     float64 // requests per second
	p50, p99 time.Duration
	errors   int64 // socket errors and non-2xx/3xx answers
	ratio    float64
	proxyCPU time.Duration
	appCPU   time.Duration
}

// proxyFlags registers the proxy block's flags (call before flag.Parse).
func proxyFlags() *proxyConfig {
	c := &proxyConfig{}
	flag.IntVar(&c.conns, "proxy-conns", 64, "proxy block: wrk's keep-alive connections")
	flag.IntVar(&c.threads, "proxy-threads", 2, "proxy block: wrk's threads")
	flag.DurationVar(&c.span, "proxy-for", 5*time.Second, "proxy block: length of one wrk run")
	flag.IntVar(&c.rounds, "proxy-rounds", 3, "proxy block: rounds over the targets (each round loads each target once)")
	flag.BoolVar(&c.nginx, "proxy-nginx", true, "proxy block: compare with nginx as a reverse proxy (installed when missing)")
	return c
}

// runProxy runs the proxy block and reports whether it failed (it could
// not run, or baton's proxies failed requests).
func runProxy(c *proxyConfig) bool {
	if err := runProxyBlock(*c); err != nil {
		fmt.Printf("proxy block FAILED: %v\n\n", err)
		return true
	}
	return false
}

// runProxyBlock runs the proxy block and prints its table. It returns an
// error when the block could not run, or when baton's proxies failed
// requests; missed targets are printed (PASS/MISS), not errors: they are
// figures of one shared machine.
func runProxyBlock(c proxyConfig) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	wrk, err := need("wrk", "wrk")
	if err != nil {
		return err
	}
	nginx := ""
	if c.nginx {
		if nginx, err = need("nginx", "nginx"); err != nil {
			return err
		}
	}
	root, err := proctest.ModuleRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "baton-bench-proxy")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// nginx's workers drop root for nobody and read their paths here.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	os.Setenv(contract.EnvRuntimeDir, filepath.Join(dir, "run"))
	fmt.Println("proxy mode (issue 12): building examples/hello and cmd/baton ...")
	bins, err := proctest.Build(root, dir, map[string]string{"hello": "./examples/hello", "baton": "./cmd/baton"}, nil)
	if err != nil {
		return err
	}
	tracker := proctest.NewTracker()
	defer tracker.Close()
	logf, err := os.Create(filepath.Join(dir, "services.log"))
	if err != nil {
		return err
	}
	defer logf.Close()

	var stops []func()
	defer func() {
		for _, stop := range slices.Backward(stops) {
			stop()
		}
	}()
	// start runs one service and waits until it is serving.
	start := func(name string, args ...string) (*proctest.Service, error) {
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		defer scancel()
		svc, err := proctest.Start(sctx, tracker, bins["baton"], name, os.Environ(), logf, args[0], args[1:]...)
		if err != nil {
			return nil, fmt.Errorf("starting %s: %w (log: %s)", name, err, logf.Name())
		}
		stops = append(stops, func() { stopProcess(ctx, tracker, svc.Cmd.Process) })
		return svc, nil
	}
	appPID := func(svc *proctest.Service) (int, error) {
		st, err := svc.Status(ctx)
		if err != nil {
			return 0, err
		}
		tracker.Track(st.PID)
		return st.PID, nil
	}

	var targets []*proxyTarget
	directAddr, err := proctest.FreeAddr("tcp")
	if err != nil {
		return err
	}
	direct, err := start("bench-direct", bins["hello"], "-name", "bench-direct", "-addr", directAddr)
	if err != nil {
		return err
	}
	targets = append(targets, &proxyTarget{key: "direct", title: "direct (hello alone)", url: "http://" + directAddr + "/", appPID: direct.Cmd.Process.Pid})
	for _, mode := range []string{"http", "tcp"} {
		addr, err := proctest.FreeAddr("tcp")
		if err != nil {
			return err
		}
		name := "bench-proxy-" + mode
		svc, err := start(name, bins["baton"], "run", "--name", name, "--proxy", mode, "--listen", "tcp://"+addr,
			"--", bins["hello"], "-name", "", "-addr", addr)
		if err != nil {
			return err
		}
		app, err := appPID(svc)
		if err != nil {
			return err
		}
		sup := svc.Cmd.Process.Pid
		targets = append(targets, &proxyTarget{key: mode, title: "baton run --proxy " + mode, url: "http://" + addr + "/",
			proxyPIDs: func() []int { return []int{sup} }, appPID: app})
	}
	if nginx != "" {
		t, stop, err := startNginx(ctx, tracker, nginx, dir, directAddr)
		if stop != nil {
			stops = append(stops, stop)
		}
		if err != nil {
			return err
		}
		t.appPID = direct.Cmd.Process.Pid
		targets = append(targets, t)
	}
	for _, t := range targets {
		if err := waitHTTP(ctx, t.url); err != nil {
			return fmt.Errorf("%s: %w", t.title, err)
		}
	}

	fmt.Printf("wrk -c %d -t %d -d %v --latency, %d rounds over the %d targets (order rotating), all on loopback on this %d-core machine\n",
		c.conns, c.threads, c.span, c.rounds, len(targets), runtime.NumCPU())
	fmt.Println("(wrk, the proxies and the apps share the cores: the ratios are those of a proxy with no core of its own)")
	// A short run each first: connection pools filled, heaps grown.
	for _, t := range targets {
		if _, err := runWrk(ctx, wrk, t, c.conns, c.threads, min(c.span, 2*time.Second)); err != nil {
			return err
		}
	}
	for r := range c.rounds {
		var directRate float64
		for i := range targets {
			t := targets[(i+r)%len(targets)]
			run, err := runWrk(ctx, wrk, t, c.conns, c.threads, c.span)
			if err != nil {
				return err
			}
			t.runs = append(t.runs, run)
			if t.key == "direct" {
				directRate = run.rate
			}
		}
		for _, t := range targets {
			last := &t.runs[len(t.runs)-1]
			last.ratio = last.rate / directRate
		}
	}
	return proxyReport(targets)
}

// proxyReport prints the table and the targets' verdicts.
func proxyReport(targets []*proxyTarget) error {
	fmt.Println()
	fmt.Printf("%-26s %10s %9s %9s %11s %12s %10s %8s\n", "", "req/s", "p50", "p99", "÷ direct", "proxy CPU", "app CPU", "errors")
	ratio := map[string]float64{}
	var failed []string
	for _, t := range targets {
		var rates, ratios, p50s, p99s, pcpu, acpu []float64
		var errs int64
		for _, r := range t.runs {
			rates = append(rates, r.rate)
			ratios = append(ratios, r.ratio)
			p50s = append(p50s, float64(r.p50))
			p99s = append(p99s, float64(r.p99))
			pcpu = append(pcpu, float64(r.proxyCPU)/float64(max(r.reqs, 1)))
			acpu = append(acpu, float64(r.appCPU)/float64(max(r.reqs, 1)))
			errs += r.errors
		}
		ratio[t.key] = median(ratios)
		proxyCol := "-"
		if t.proxyPIDs != nil {
			proxyCol = fmt.Sprintf("%.1f µs/req", median(pcpu)/1e3)
		}
		fmt.Printf("%-26s %10.0f %9s %9s %11.2f %12s %7.1f µs %8d\n", t.title, median(rates),
			roundDur(time.Duration(median(p50s))), roundDur(time.Duration(median(p99s))), ratio[t.key],
			proxyCol, median(acpu)/1e3, errs)
		if errs > 0 && t.key != "nginx" {
			failed = append(failed, fmt.Sprintf("%s: %d failed requests", t.title, errs))
		}
	}
	fmt.Println("(medians over the rounds; ÷ direct is each round's rate over direct's in the same round; CPU is user+system per request, from /proc)")
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	if r, ok := ratio["tcp"]; ok {
		fmt.Printf("target tcp ≥ %.1f× direct: %.2f  %s\n", tcpTarget, r, verdict(r >= tcpTarget))
	}
	if n, ok := ratio["nginx"]; ok {
		fmt.Printf("target http ≥ nginx's ratio: %.3f vs %.3f  %s\n", ratio["http"], n, verdict(ratio["http"] >= n))
	} else {
		fmt.Println("target http ≥ nginx's ratio: not judged (no nginx)")
	}
	fmt.Println()
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

// runWrk loads t for span and reads wrk's figures and the processes' CPU.
func runWrk(ctx context.Context, wrk string, t *proxyTarget, conns, threads int, span time.Duration) (wrkRun, error) {
	cpu := func(pids []int) time.Duration {
		var sum time.Duration
		for _, pid := range pids {
			if u, err := proctest.ReadUsage(pid); err == nil {
				sum += u.CPU
			}
		}
		return sum
	}
	var proxyPIDs []int
	if t.proxyPIDs != nil {
		proxyPIDs = t.proxyPIDs()
	}
	p0, a0 := cpu(proxyPIDs), cpu([]int{t.appPID})
	wctx, cancel := context.WithTimeout(ctx, span+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(wctx, wrk, "-c", strconv.Itoa(conns), "-t", strconv.Itoa(threads),
		"-d", span.String(), "--latency", t.url).CombinedOutput()
	if err != nil {
		return wrkRun{}, fmt.Errorf("wrk %s: %w\n%s", t.url, err, out)
	}
	run, err := parseWrk(out)
	if err != nil {
		return run, fmt.Errorf("wrk %s: %w\n%s", t.url, err, out)
	}
	run.proxyCPU, run.appCPU = cpu(proxyPIDs)-p0, cpu([]int{t.appPID})-a0
	return run, nil
}

var (
	wrkTotal  = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkRate   = regexp.MustCompile(`(?m)^Requests/sec:\s+([\d.]+)`)
	wrkPct    = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)
	wrkSocket = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// parseWrk reads the figures of `wrk --latency` output.
func parseWrk(out []byte) (wrkRun, error) {
	var r wrkRun
	m := wrkTotal.FindSubmatch(out)
	m2 := wrkRate.FindSubmatch(out)
	if m == nil || m2 == nil {
		return r, errors.New("no request count or rate in wrk's output")
	}
	r.reqs, _ = strconv.ParseInt(string(m[1]), 10, 64)
	r.rate, _ = strconv.ParseFloat(string(m2[1]), 64)
	for _, p := range wrkPct.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(p[2]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(p[3])]
		d := time.Duration(v * float64(unit))
		if string(p[1]) == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	if r.p50 == 0 || r.p99 == 0 {
		return r, errors.New("no latency distribution in wrk's output")
	}
	if m := wrkSocket.FindSubmatch(out); m != nil {
		for _, g := range m[1:] {
			n, _ := strconv.ParseInt(string(g), 10, 64)
			r.errors += n
		}
	}
	if m := wrkNon2xx.FindSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		r.errors += n
	}
	return r, nil
}

// startNginx runs nginx as a reverse proxy in front of upstream, with
// keep-alive connections to it (the set-up its documentation gives for
// that) and worker_processes auto, like Go's GOMAXPROCS. It sends the
// forwarding headers baton's http proxy sends (Host as the client gave
// it, X-Forwarded-For, -Host and -Proto, Forwarded): the app behind
// either then parses the same request. Two headers fewer (nginx's usual
// X-Forwarded-For and -Proto alone) cost hello about 2 µs less per
// request on this machine, a gap that is not the proxy's.
func startNginx(ctx context.Context, tracker *proctest.Tracker, nginx, dir, upstream string) (*proxyTarget, func(), error) {
	addr, err := proctest.FreeAddr("tcp")
	if err != nil {
		return nil, nil, err
	}
	prefix := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(filepath.Join(prefix, "logs"), 0o755); err != nil {
		return nil, nil, err
	}
	conf := fmt.Sprintf(`worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	upstream hello {
		server %[2]s;
		keepalive 128;
	}
	server {
		listen %[3]s;
		location / {
			proxy_pass http://hello;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host $http_host;
			proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Host $http_host;
			proxy_set_header X-Forwarded-Proto $scheme;
			proxy_set_header Forwarded "for=$remote_addr;host=\"$http_host\";proto=$scheme";
		}
	}
}
`, prefix, upstream, addr)
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(nginx, "-p", prefix, "-c", confPath, "-g", "daemon off;")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("nginx: %w", err)
	}
	tracker.Track(cmd.Process.Pid)
	stop := func() { stopProcess(ctx, tracker, cmd.Process) }
	master := cmd.Process.Pid
	t := &proxyTarget{key: "nginx", title: "nginx reverse proxy", url: "http://" + addr + "/",
		proxyPIDs: func() []int { return append([]int{master}, childrenOf(master)...) }}
	if err := waitHTTP(ctx, t.url); err != nil {
		return nil, stop, fmt.Errorf("nginx: %w: %s", err, stderr.String())
	}
	return t, stop, nil
}

// childrenOf lists pid's children (Linux /proc; none elsewhere).
func childrenOf(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

// stopProcess asks p to stop (SIGINT: hello and baton drain, nginx quits)
// and waits for it, bounded; then kills it.
func stopProcess(ctx context.Context, tracker *proctest.Tracker, p *os.Process) {
	if p == nil || p.Pid <= 0 {
		return
	}
	_ = p.Signal(os.Interrupt)
	wctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	if _, err := tracker.WaitExit(wctx, p.Pid); err != nil {
		_ = p.Kill()
	}
}

// waitHTTP waits until url answers 200, bounded.
func waitHTTP(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not answering 200: %v (%w)", url, last, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// need returns the path of program name, installing the Debian package
// pkg when it is missing (scripts/need.sh).
func need(name, pkg string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	root, err := proctest.ModuleRoot()
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "need.sh"), name, pkg)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s (Debian package %s) is needed for the proxy block: %w: %s", name, pkg, err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
