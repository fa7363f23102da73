//go:build linux

// Package haproxy proves internal/haproxy against a real HAProxy (the
// Debian package, installed when missing; CI=true fails without it) in
// front of two examples/hello instances on their own loopback ports, the
// way two hosts of a blue/green pair sit behind a load balancer: under
// non-retried POST load through HAProxy, a weighted switch, a canary
// share, and a new release that fails its health check after the switch.
package haproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/haproxy"
	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proctest"
	"github.com/baton-go/baton/internal/testenv"
)

// config is the HAProxy set-up under test (docs/haproxy.md explains it):
// fast checks (a failed one is seen within 200 ms, a server is taken out
// after 3 in a row), http-server-close so that every request is balanced
// on its own by the current weights and no idle server connection is
// kept (a server can be replaced without a request sent on a connection
// it is closing), and only abnormal requests logged.
const config = `global
    log stderr format raw local0 info
    stats socket %[1]s mode 600 level admin
    stats timeout 30s

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    option http-server-close
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s

frontend public
    bind %[2]s
    default_backend app

backend app
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server check inter 200ms fall 3 rise 2
    server blue %[3]s weight 100
    server green %[4]s weight 0
`

// instance is one hello process behind HAProxy.
type instance struct {
	name, addr, version string
	pid                 int
	log                 *os.File
}

type rig struct {
	t       *testing.T
	ctx     context.Context
	dir     string
	hello   string
	bins    map[string]string // the programs built, by name
	tracker *proctest.Tracker
	lb      *haproxy.Client
	hapLog  string
	// blue (v1, weight 100) and green (v2, weight 0) behind HAProxy's
	// frontend front; sock is its runtime API.
	blue, green *instance
	front, sock string
}

func TestHAProxyBlueGreenCanaryRollback(t *testing.T) {
	r := startRig(t, 80*time.Second, nil)
	ctx, blue, green, front := r.ctx, r.blue, r.green, r.front
	load := r.startLoad()

	// 1. Blue/green: all weight from blue (v1) to green (v2), blue drained
	// while a slow request it took before the switch is still running.
	slow := r.holdSlow(front, 1500)
	mark := load.Snapshot()
	rep, err := r.lb.Switch(ctx, "app", "blue", "green", haproxy.SwitchOptions{DrainTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("switch blue -> green: %v (%+v)", err, rep)
	}
	select {
	case <-ctx.Done():
		t.Fatal("the slow request was not answered")
	case a := <-slow:
		if a.err != nil || a.status != 200 || a.pid != blue.pid {
			t.Errorf("the slow request taken by blue before the switch: status %d from pid %d, %v; want 200 from blue (pid %d)", a.status, a.pid, a.err, blue.pid)
		}
	}
	if rep.SessionsAtSwitch < 1 || !rep.Drained.After(rep.Switched) {
		t.Errorf("switch: blue had %d sessions at the switch, drained at %v (switched at %v); want the slow one waited for", rep.SessionsAtSwitch, rep.Drained, rep.Switched)
	}
	t.Logf("switch blue -> green: weights moved in %v, blue had %d sessions, drained %v after the switch",
		rep.Switched.Sub(rep.Started).Round(time.Millisecond), rep.SessionsAtSwitch, rep.Drained.Sub(rep.Switched).Round(time.Millisecond))
	s := r.servers()
	if s["green"].Weight != 100 || s["blue"].Weight != 0 || !s["blue"].Draining() {
		t.Errorf("after the switch: blue %s weight %d, green %s weight %d", s["blue"].Status, s["blue"].Weight, s["green"].Status, s["green"].Weight)
	}
	r.phase(load, mark, 0, "during the switch")
	mark = load.Snapshot()
	after := r.phase(load, mark, 1000, "after the switch")
	if after[blue.pid] != 0 || after[green.pid] == 0 {
		t.Errorf("after the switch: %d answers from v1 (want 0), %d from v2", after[blue.pid], after[green.pid])
	}

	// 2. Canary: blue (v1) stable, green (v2) at 10%.
	if err := r.lb.Canary(ctx, "app", "blue", "green", 10); err != nil {
		t.Fatal(err)
	}
	mark = load.Snapshot()
	canary := r.phase(load, mark, 3000, "canary at 10%")
	n := canary[blue.pid] + canary[green.pid]
	share := 100 * float64(canary[green.pid]) / float64(n)
	t.Logf("canary at 10%%: %d of %d answers from v2 = %.2f%%", canary[green.pid], n, share)
	if share < 7.5 || share > 12.5 || canary[0]-n > 2 { // a snapshot may count an answer by kind before its pid
		t.Errorf("canary at 10%%: v2 answered %.2f%% of %d (want 10 ± 2.5), %d answers in all", share, n, canary[0])
	}

	// 3. A release that fails its health check. Back to blue alone, green
	// out of rotation (maintenance), its process replaced by a v2 whose
	// /healthz answers 503 from 4 s after it is ready (while it serves
	// requests normally), green ready again and up.
	if err := r.lb.Canary(ctx, "app", "blue", "green", 0); err != nil {
		t.Fatal(err)
	}
	if err := r.lb.SetState(ctx, "app", "green", haproxy.Maint); err != nil {
		t.Fatal(err)
	}
	r.waitServers("green without sessions", func(s map[string]haproxy.Server) bool { return s["green"].Sessions == 0 })
	r.stopHello(green)
	sick := r.startHello("hapgreen2", green.addr, "v2", "-unhealthy-after", "4s")
	if err := r.lb.SetState(ctx, "app", "green", haproxy.Ready); err != nil {
		t.Fatal(err)
	}
	r.waitServers("the new green up", func(s map[string]haproxy.Server) bool { return s["green"].Healthy() })

	mark = load.Snapshot()
	rep, err = r.lb.Switch(ctx, "app", "blue", "green", haproxy.SwitchOptions{DrainTimeout: 15 * time.Second, Watch: 15 * time.Second})
	rolledBack := time.Now()
	if !errors.Is(err, haproxy.ErrUnhealthy) || !rep.RolledBack {
		if rep.Refused {
			t.Fatalf("the switch to the sick release was refused before it began (%v): it failed its check less than 4 s after it was ready, before the switch; the roll-back path was not exercised", err)
		}
		t.Fatalf("switch to a release failing its checks: %v, report %+v; want ErrUnhealthy and a roll-back", err, rep)
	}
	t.Logf("switch blue -> sick green: %v", err)
	t.Logf("rolled back %v after the switch, green then %q (check %s, health %d/%d)",
		time.Since(rep.Switched).Round(time.Millisecond), rep.ToServer.Status, rep.ToServer.CheckStatus, rep.ToServer.CheckHealth, rep.ToServer.CheckRise+rep.ToServer.CheckFall-1)
	s = r.servers()
	if s["blue"].Weight != 100 || s["blue"].Draining() || s["green"].Weight != 0 {
		t.Errorf("after the roll-back: blue %s weight %d, green %s weight %d", s["blue"].Status, s["blue"].Weight, s["green"].Status, s["green"].Weight)
	}
	// A request sent to green just before the roll-back may still be on
	// its way back (HAProxy counts its session closed before the client
	// reads the answer): what must not happen is an answer from green to a
	// request sent after the roll-back, so that is judged by send time.
	r.waitServers("the sick green without sessions", func(s map[string]haproxy.Server) bool { return s["green"].Sessions == 0 })
	during := r.phase(load, mark, 0, "switch to the sick release and roll-back")
	mark = load.Snapshot()
	back := r.phase(load, mark, 1000, "after the roll-back")
	if sent := load.Snapshot().PIDs[sick.pid].LastSent; sent.After(rolledBack) || back[blue.pid] == 0 {
		t.Errorf("after the roll-back: the sick v2 answered a request sent %v after the roll-back (want none; %d answers from it in the window), %d from v1",
			sent.Sub(rolledBack), back[sick.pid], back[blue.pid])
	}
	t.Logf("the sick v2 answered %d requests between the switch and the roll-back", during[sick.pid])

	// Once HAProxy has taken it out, a switch to it is refused outright.
	r.waitServers("the sick green down", func(s map[string]haproxy.Server) bool {
		return s["green"].HasCheck() && !s["green"].Up()
	})
	rep, err = r.lb.Switch(ctx, "app", "blue", "green", haproxy.SwitchOptions{})
	if !errors.Is(err, haproxy.ErrUnhealthy) || !rep.Refused || rep.RolledBack {
		t.Errorf("switch to a server that is down: %v, report %+v; want ErrUnhealthy, refused", err, rep)
	}
	t.Logf("switch blue -> down green: %v", err)
	s = r.servers()
	if s["blue"].Weight != 100 || s["blue"].Draining() || s["green"].Weight != 0 {
		t.Errorf("after the refused switch: blue %s weight %d, green %s weight %d", s["blue"].Status, s["blue"].Weight, s["green"].Status, s["green"].Weight)
	}
	if err := r.lb.Canary(ctx, "app", "blue", "green", 10); !errors.Is(err, haproxy.ErrUnhealthy) {
		t.Errorf("canary on a server that is down: %v, want ErrUnhealthy", err)
	}
}

// startRig builds examples/hello (and the programs in extra, by name:
// package), starts blue (v1) and green (v2) on loopback ports and HAProxy
// in front of them with config (blue at weight 100, green at 0), and
// returns once HAProxy shows both healthy. Everything is stopped at the
// end of the test; r.ctx ends after timeout.
func startRig(t *testing.T, timeout time.Duration, extra map[string]string) *rig {
	t.Helper()
	haproxyBin := testenv.Command(t, "haproxy", "haproxy")
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	// A short directory: unix socket paths are limited to ~104 bytes.
	dir, err := os.MkdirTemp("", "bhap")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	t.Setenv("BATON_RUNTIME_DIR", filepath.Join(dir, "run"))
	pkgs := map[string]string{"hello": "./examples/hello"}
	for name, pkg := range extra {
		pkgs[name] = pkg
	}
	bins, err := proctest.Build(root, filepath.Join(dir, "bin"), pkgs, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	r := &rig{t: t, ctx: ctx, dir: dir, hello: bins["hello"], bins: bins, tracker: proctest.NewTracker()}
	t.Cleanup(r.tracker.Close)

	r.blue = r.startHello("hapblue", freeAddr(t), "v1")
	r.green = r.startHello("hapgreen", freeAddr(t), "v2")
	r.front = freeAddr(t)
	r.sock = filepath.Join(dir, "admin.sock")
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, config, r.sock, r.front, r.blue.addr, r.green.addr), 0o644); err != nil {
		t.Fatal(err)
	}
	r.startHAProxy(haproxyBin, cfg)
	if r.lb, err = haproxy.New(r.sock); err != nil {
		t.Fatal(err)
	}
	r.waitServers("both servers up", func(s map[string]haproxy.Server) bool {
		return s["blue"].Healthy() && s["green"].Healthy()
	})
	return r
}

// startLoad starts non-retried load through HAProxy (4 keep-alive POST
// clients, 2 fresh-connection ones) and waits until blue answers it; at
// the end of the test the load stops and must have had 0 failures.
func (r *rig) startLoad() *loadgen.Load {
	r.t.Helper()
	load, err := loadgen.Start(r.ctx, loadgen.Config{
		Addr:        r.front,
		Workers:     map[loadgen.Kind]int{loadgen.KeepAlivePOST: 4, loadgen.Fresh: 2},
		MaxRequests: 1_000_000,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() {
		rep := load.Stop()
		r.t.Logf("load through HAProxy, whole test:\n%s", rep)
		if rep.TotalFailed() != 0 {
			r.t.Errorf("%d failed requests through HAProxy (want 0); HAProxy's log:\n%s", rep.TotalFailed(), r.haproxyLog())
		}
	})
	if _, err := load.WaitPID(r.ctx, r.blue.pid); err != nil {
		r.t.Fatal(err)
	}
	return load
}

// phase waits until at least n more requests have been answered since
// mark (n = 0: none awaited) and returns the answers per pid since mark,
// with the total under key 0 and the failures checked.
func (r *rig) phase(load *loadgen.Load, mark loadgen.Report, n int64, what string) map[int]int64 {
	r.t.Helper()
	if n > 0 {
		waitFor(r.t, r.ctx, 30*time.Second, fmt.Sprintf("%s: %d answers", what, n), func() bool {
			return load.Snapshot().TotalOK()-mark.TotalOK() >= n
		})
	}
	now := load.Snapshot()
	got := map[int]int64{0: now.TotalOK() - mark.TotalOK()}
	for pid, st := range now.PIDs {
		if d := st.Responses - mark.PIDs[pid].Responses; d > 0 {
			got[pid] = d
		}
	}
	if f := now.TotalFailed() - mark.TotalFailed(); f != 0 {
		r.t.Errorf("%s: %d failed requests: %+v", what, f, now.Failures)
	}
	r.t.Logf("%s: %d answers %v, 0 failed", what, got[0], got)
	return got
}

type slowAnswer struct {
	status, pid int
	err         error
}

// holdSlow sends GET /sleep?ms=ms through HAProxy on a connection of its
// own and returns once HAProxy shows the request's session on a server
// (show sess, by the connection's source port); the answer comes on the
// channel.
func (r *rig) holdSlow(front string, ms int) <-chan slowAnswer {
	r.t.Helper()
	c, err := net.Dial("tcp", front)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := fmt.Fprintf(c, "GET /sleep?ms=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", ms); err != nil {
		r.t.Fatal(err)
	}
	out := make(chan slowAnswer, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			out <- slowAnswer{err: err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		pid, _ := strconv.Atoi(resp.Header.Get("X-Pid"))
		out <- slowAnswer{status: resp.StatusCode, pid: pid}
	}()
	src := "src=" + c.LocalAddr().String() + " "
	waitFor(r.t, r.ctx, 10*time.Second, "the slow request on a server", func() bool {
		sess, err := r.lb.Command(r.ctx, "show sess")
		if err != nil {
			return false
		}
		for _, l := range strings.Split(sess, "\n") {
			if strings.Contains(l, src) && strings.Contains(l, " srv=blue ") {
				return true
			}
		}
		return false
	})
	return out
}

func (r *rig) startHello(name, addr, version string, extra ...string) *instance {
	r.t.Helper()
	f, err := os.Create(filepath.Join(r.dir, name+".log"))
	if err != nil {
		r.t.Fatal(err)
	}
	args := append([]string{"-name", name, "-addr", addr, "-version", version}, extra...)
	svc, err := proctest.Start(r.ctx, r.tracker, "", name, os.Environ(), f, r.hello, args...)
	if err != nil {
		r.t.Fatalf("hello %s: %v\n%s", name, err, readTail(f.Name()))
	}
	in := &instance{name: name, addr: addr, version: version, pid: svc.Cmd.Process.Pid, log: f}
	r.t.Cleanup(func() {
		r.stopHello(in)
		if r.t.Failed() {
			r.t.Logf("hello %s log:\n%s", name, readTail(f.Name()))
		}
		f.Close()
	})
	return in
}

// stopHello ends an instance with SIGTERM (it drains) and waits for its
// exit; an instance already stopped is left alone.
func (r *rig) stopHello(in *instance) {
	r.t.Helper()
	if _, gone := r.tracker.Exited(in.pid); gone {
		return
	}
	if err := signalPID(r.t, in.pid, syscall.SIGTERM); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := r.tracker.WaitExit(ctx, in.pid); err != nil {
		r.t.Errorf("hello %s (pid %d) still running 20 s after SIGTERM: %v", in.name, in.pid, err)
	}
}

func (r *rig) startHAProxy(bin, cfg string) {
	r.t.Helper()
	r.hapLog = filepath.Join(r.dir, "haproxy.log")
	f, err := os.Create(r.hapLog)
	if err != nil {
		r.t.Fatal(err)
	}
	// -db: in the foreground, no daemon, so that the test owns the process.
	cmd := exec.Command(bin, "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	r.t.Cleanup(func() {
		defer f.Close()
		select {
		case err := <-exited:
			r.t.Errorf("haproxy exited during the test: %v\n%s", err, r.haproxyLog())
			return
		default:
		}
		if err := signalPID(r.t, cmd.Process.Pid, syscall.SIGTERM); err != nil {
			r.t.Errorf("stopping haproxy: %v", err)
			return
		}
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			r.t.Errorf("haproxy still running 20 s after SIGTERM")
			cmd.Process.Kill()
		}
		if r.t.Failed() {
			r.t.Logf("HAProxy's log:\n%s", r.haproxyLog())
		}
	})
	waitFor(r.t, r.ctx, 15*time.Second, "haproxy's stats socket", func() bool {
		select {
		case err := <-exited:
			exited <- err
			r.t.Fatalf("haproxy exited at start: %v\n%s", err, r.haproxyLog())
		default:
		}
		_, err := os.Stat(r.sock)
		return err == nil
	})
}

func (r *rig) haproxyLog() string { return readTail(r.hapLog) }

// servers reads the backend's servers by name.
func (r *rig) servers() map[string]haproxy.Server {
	r.t.Helper()
	all, err := r.lb.Servers(r.ctx, "app")
	if err != nil {
		r.t.Fatalf("show stat: %v", err)
	}
	m := map[string]haproxy.Server{}
	for _, s := range all {
		m[s.Name] = s
	}
	return m
}

// waitServers polls HAProxy's view of the backend until cond holds.
func (r *rig) waitServers(what string, cond func(map[string]haproxy.Server) bool) {
	r.t.Helper()
	var last map[string]haproxy.Server
	ok := pollUntil(r.ctx, 20*time.Second, func() bool {
		all, err := r.lb.Servers(r.ctx, "app")
		if err != nil {
			return false
		}
		last = map[string]haproxy.Server{}
		for _, s := range all {
			last[s.Name] = s
		}
		return cond(last)
	})
	if !ok {
		r.t.Fatalf("%s: not within 20 s; HAProxy shows %+v", what, last)
	}
}

// pollUntil checks cond every 10 ms until it holds (true), or timeout has
// passed or ctx is done (false; cond is checked one last time).
func pollUntil(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return cond()
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-tick.C:
		}
	}
	return true
}

func waitFor(t *testing.T, ctx context.Context, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !pollUntil(ctx, timeout, cond) {
		t.Fatalf("%s: not within %v", what, timeout)
	}
}

// signalPID sends sig to pid, refusing (the test fails) a pid that is not
// a process id: kill(0) would signal the test's own process group.
func signalPID(t *testing.T, pid int, sig syscall.Signal) error {
	t.Helper()
	if pid <= 0 {
		t.Fatalf("refusing to send %v to pid %d: no process id", sig, pid)
	}
	return syscall.Kill(pid, sig)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := proctest.FreeAddr("tcp")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func readTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return strings.TrimSpace(string(b))
}
