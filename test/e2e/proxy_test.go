//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/loadgen"
)

// Proxy mode (issue 12): baton run --proxy serves the public sockets
// itself and forwards to the generations by weight.

// TestProxyBlueGreenUnderLoad: hello (the library, asking for the public
// addresses and given private sockets standing for them) behind --proxy
// http on a TCP and a unix socket, 20 blue/green upgrades under
// non-retried POST, keep-alive, fresh-connection and slow requests: no
// request fails, every new generation answers, the old ones exit.
func TestProxyBlueGreenUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end load test")
	}
	for _, mode := range []string{"http", "tcp"} {
		t.Run(mode, func(t *testing.T) {
			addr := freeAddr(t, "tcp")
			sock := filepath.Join(workDir, "px-"+mode+".sock")
			name := "px" + mode
			svc, logf := startSupervised(t, name, os.Environ(), "--proxy", mode, "--listen", "tcp://"+addr, "--listen", "unix://"+sock,
				"--drain-timeout", "10s", "--", bins["hello"], "-addr", addr, "-unix", sock, "-idle-grace", "1s")
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			st, err := svc.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			load := startMixedLoad(t, ctx, addr, sock, "")
			waitResponses(t, load.tcp, st.PID, 100)
			olds, current := upgradeEvery(t, ctx, svc, load.tcp, st.PID, 20, 500*time.Millisecond)
			waitResponses(t, load.tcp, current, 100)
			rep := load.stopAndCheck(t)
			t.Logf("%s proxy, 20 upgrades: %d requests, 0 failed", mode, rep.TotalOK())
			px := supervisorStatus(t, name).Supervisor.Proxy
			if px == nil || px.Mode != mode || len(px.Backends) != 1 || px.Backends[0].PID != current || px.Backends[0].Weight != 100 {
				t.Errorf("status of the proxy: %+v; want %s, generation pid %d alone at weight 100", px, mode, current)
			}
			for _, pid := range olds {
				tracker.Track(pid)
				wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
				_, err := tracker.WaitExit(wctx, pid)
				wcancel()
				if err != nil {
					t.Fatalf("old generation %d still running: %v", pid, err)
				}
			}
			if mode == "tcp" {
				// hello is a library app: its connections are passed to
				// it, not relayed (each retired generation logs its counts).
				c := passCounts(t, logf.Name())
				t.Logf("tcp proxy, retired generations' client connections: %+v", c)
				if c.retired < len(olds) || c.passed == 0 || c.relayed != 0 || c.lost != 0 {
					t.Errorf("connections passed to the generations: %+v over %d retired generations; want all passed (none relayed, none lost)", c, len(olds))
				}
			}
		})
	}
}

// passCounts sums what the supervisor's log says about the client
// connections of the generations it retired (tcp proxy, proxy_pass.go).
type passCount struct{ retired, passed, relayed, refused, lost int }

func passCounts(t *testing.T, log string) passCount {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	var c passCount
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "client connections of the retired generation") {
			continue
		}
		c.retired++
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.Atoi(v)
			switch k {
			case "conns_passed":
				c.passed += n
			case "conns_relayed":
				c.relayed += n
			case "conns_refused":
				c.refused += n
			case "conns_lost":
				c.lost += n
			}
		}
	}
	return c
}

// canaryShare counts, between two snapshots, the answers of the canary
// and of the stable generation (2xx, and for the canary its failed
// requests too: a sick canary's 500s were answers of its).
func canaryShare(before, after loadgen.Report, canary, stable int) (fromCanary, fromStable int64) {
	fromCanary = after.PIDs[canary].Responses - before.PIDs[canary].Responses
	fromStable = after.PIDs[stable].Responses - before.PIDs[stable].Responses
	return fromCanary, fromStable
}

// othersAnswered counts, between two snapshots, the answers of pids other
// than the canary and the stable generation (by pid only: a snapshot's
// counts by kind and by pid are not taken at one instant, so comparing
// the two is off by the answers being counted at that moment).
func othersAnswered(before, after loadgen.Report, canary, stable int) (n int64) {
	for pid, st := range after.PIDs {
		if pid != canary && pid != stable {
			n += st.Responses - before.PIDs[pid].Responses
		}
	}
	return n
}

// TestProxyCanaryPromoteRollback: --canary 10 under keep-alive load takes
// 10% ± 2 of the requests (by X-Pid), the rest go to the stable
// generation; promote gives it all of them; a second canary rolled back
// gets none of the requests sent after the roll-back answered. No request
// fails.
func TestProxyCanaryPromoteRollback(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end load test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	load, stable := startProxiedUnderLoad(t, ctx, "pxcanary", bins["hello"], "-idle-grace", "1s")
	defer load.Stop()

	upgradeCanary := func(args ...string) contract.UpgradeResult {
		t.Helper()
		code, out := runCLI(append([]string{"upgrade", "--name", "pxcanary", "--json"}, args...)...)
		var rep struct {
			OK     bool
			Result *contract.UpgradeResult
		}
		if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || !rep.OK || rep.Result == nil || rep.Result.Canary == nil {
			t.Fatalf("baton upgrade %v: exit %d: %s", args, code, out)
		}
		return *rep.Result
	}

	// 1. A canary at 10%.
	// The p99 check is loosened: this test is about the shares, and a cold
	// canary's first requests on a loaded machine can fail a 1.5x p99
	// (TestProxyCanaryFailsAutomatically tests the judgement).
	res := upgradeCanary("--canary", "10", "--step-interval", "1s", "--max-p99-ratio", "50")
	canary := res.Canary.PID
	if res.Canary.Weight != 10 {
		t.Fatalf("canary weight %d, want 10", res.Canary.Weight)
	}
	mark := load.Snapshot()
	waitFor(t, 60*time.Second, "3,000 answers at 10%", func() bool { return load.Snapshot().TotalOK()-mark.TotalOK() >= 3000 })
	now := load.Snapshot()
	c, s := canaryShare(mark, now, canary, stable)
	share := 100 * float64(c) / float64(c+s)
	t.Logf("canary at 10%%: %d of %d answers from the canary = %.2f%%", c, c+s, share)
	if o := othersAnswered(mark, now, canary, stable); share < 8 || share > 12 || o != 0 {
		t.Errorf("canary at 10%%: %.2f%% of %d (want 10 ± 2), %d answers from other pids", share, c+s, o)
	}
	if px := supervisorStatus(t, "pxcanary").Supervisor.Proxy; px == nil || px.Canary == nil || px.Canary.PID != canary || len(px.Backends) != 2 {
		t.Errorf("baton status during the canary: %+v; want canary %d and two backends", px, canary)
	}

	// 2. Promote: the canary takes everything sent afterwards.
	if code, out := runCLI("promote", "--name", "pxcanary"); code != 0 {
		t.Fatalf("baton promote: exit %d: %s", code, out)
	}
	promoted := time.Now()
	mark = load.Snapshot()
	waitFor(t, 30*time.Second, "1,000 answers after the promote", func() bool { return load.Snapshot().TotalOK()-mark.TotalOK() >= 1000 })
	if sent := load.Snapshot().PIDs[stable].LastSent; sent.After(promoted) {
		t.Errorf("after the promote, the old generation answered a request sent %v after it", sent.Sub(promoted))
	}
	stable = canary

	// 3. A second canary, rolled back: it gets nothing sent afterwards.
	res = upgradeCanary("--canary", "10", "--step-interval", "1s", "--max-p99-ratio", "50")
	canary = res.Canary.PID
	if _, err := load.WaitPID(ctx, canary); err != nil {
		t.Fatal(err)
	}
	if code, out := runCLI("rollback", "--name", "pxcanary"); code != 0 {
		t.Fatalf("baton rollback of the canary: exit %d: %s", code, out)
	}
	rolledBack := time.Now()
	mark = load.Snapshot()
	waitFor(t, 30*time.Second, "1,000 answers after the roll-back", func() bool { return load.Snapshot().TotalOK()-mark.TotalOK() >= 1000 })
	if sent := load.Snapshot().PIDs[canary].LastSent; sent.After(rolledBack) {
		t.Errorf("after the roll-back, the canary answered a request sent %v after it", sent.Sub(rolledBack))
	}
	rep := load.Stop()
	if rep.TotalFailed() != 0 {
		t.Errorf("%d failed requests: %s", rep.TotalFailed(), rep)
	}
	st := supervisorStatus(t, "pxcanary")
	if st.PID != stable || st.Last == nil || st.Last.Code != contract.CodeCanceled {
		t.Errorf("after the roll-back: serving pid %d (want %d), last outcome %+v (want canceled)", st.PID, stable, st.Last)
	}
	tracker.Track(canary)
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	if _, err := tracker.WaitExit(wctx, canary); err != nil {
		t.Errorf("the rolled-back canary %d still runs: %v", canary, err)
	}
}

// TestProxyCanaryFailsAutomatically: a canary that answers 500 to half
// its requests is rolled back by itself in its first step; it saw no
// more requests than its weight allows; baton upgrade exits 1 with
// canary_failed and the figures.
func TestProxyCanaryFailsAutomatically(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end load test")
	}
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	installCopy(t, bins["hello"], app)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	load, stable := startProxiedUnderLoad(t, ctx, "pxsick", app)
	defer load.Stop()
	installCopy(t, bins["hello-sick500"], app)
	before := load.Snapshot()
	code, out := runCLI("upgrade", "--name", "pxsick", "--json", "--steps", "10,50,100", "--step-interval", "20s")
	failedAt := time.Now()
	after := load.Snapshot()
	var rep struct {
		OK    bool
		Code  string
		Error string
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 || rep.OK || rep.Code != contract.CodeCanaryFailed {
		t.Fatalf("baton upgrade to a sick canary: exit %d, %s; want exit 1 with code canary_failed", code, out)
	}
	t.Logf("baton upgrade: %s", rep.Error)
	// Every failure was the canary's (its 500s); nothing else failed.
	var canary int
	for _, f := range after.Failures {
		if f.PID == stable || f.PID == 0 {
			t.Errorf("a request failed that the sick canary did not answer: %+v", f)
		}
		canary = f.PID
	}
	if canary == 0 {
		t.Fatal("the sick canary answered no request with 500")
	}
	failed := after.TotalFailed() - before.TotalFailed()
	c, s := canaryShare(before, after, canary, stable)
	c += failed
	share := 100 * float64(c) / float64(c+s)
	t.Logf("the sick canary (pid %d) saw %d of %d requests (%.2f%%; %d of them failed) before it was rolled back", canary, c, c+s, share, failed)
	if share > 12 {
		t.Errorf("the sick canary saw %.2f%% of the requests; its first step's weight allows 10 ± 2", share)
	}
	if got := load.Snapshot().PIDs[canary].LastSent; got.After(failedAt) {
		t.Errorf("the canary answered a request sent %v after the upgrade failed", got.Sub(failedAt))
	}
	st := supervisorStatus(t, "pxsick")
	if st.PID != stable || st.Last == nil || st.Last.Code != contract.CodeCanaryFailed {
		t.Errorf("after the failed canary: serving pid %d (want %d), last %+v", st.PID, stable, st.Last)
	}
}

// supervisorStatus is baton status --json of a baton run service.
func supervisorStatus(t *testing.T, name string) contract.Status {
	t.Helper()
	code, out := runCLI("status", "--name", name, "--json")
	var st contract.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.Supervisor == nil {
		t.Fatalf("baton status --name %s --json: exit %d, %v: %s", name, code, err, out)
	}
	return st
}

// TestProxySticky: with --sticky, a client that keeps the cookie stays
// with the generation that answered it first while a canary has half of
// the traffic; one without the cookie is spread over both.
func TestProxySticky(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	startSupervised(t, "pxsticky", os.Environ(), "--proxy", "http", "--sticky", "--listen", "tcp://"+addr,
		"--", bins["hello"], "-addr", addr)
	if code, out := runCLI("upgrade", "--name", "pxsticky", "--canary", "50", "--step-interval", "1h", "--max-p99-ratio", "50"); code != 0 {
		t.Fatalf("baton upgrade --canary 50: exit %d: %s", code, out)
	}
	pids := func(c *http.Client) map[string]int {
		seen := map[string]int{}
		for range 40 {
			resp, err := c.Get("http://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			seen[resp.Header.Get("X-Pid")]++
		}
		return seen
	}
	jar, _ := cookiejar.New(nil)
	if seen := pids(&http.Client{Jar: jar}); len(seen) != 1 {
		t.Errorf("a client with the cookie was answered by %v; want one generation", seen)
	}
	if seen := pids(&http.Client{}); len(seen) != 2 {
		t.Errorf("a client without the cookie was answered by %v; want both generations", seen)
	}
	if code, out := runCLI("rollback", "--name", "pxsticky"); code != 0 {
		t.Errorf("baton rollback: exit %d: %s", code, out)
	}
}

// TestProxyStopWithHeldCanary: a canary that passed its step and holds
// for the operator; baton stop then stops everything (it once waited
// forever: the canary's loop waited for a rollout that had ended).
func TestProxyStopWithHeldCanary(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	svc, logf := startSupervised(t, "pxheld", os.Environ(), "--proxy", "http", "--listen", "tcp://"+addr,
		"--", bins["hello"], "-addr", addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{loadgen.KeepAliveGET: 4}, MaxRequests: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	// (--max-p99-ratio: this test is about a stop, not the judgement,
	// which TestProxyCanaryFailsAutomatically tests.)
	if code, out := runCLI("upgrade", "--name", "pxheld", "--canary", "20", "--step-interval", "300ms", "--max-p99-ratio", "50"); code != 0 {
		t.Fatalf("baton upgrade --canary 20: exit %d: %s", code, out)
	}
	waitFor(t, 30*time.Second, "the canary's step judged", func() bool {
		b, _ := os.ReadFile(logf.Name())
		return strings.Contains(string(b), "canary step passed")
	})
	load.Stop()
	if code, out := runCLI("stop", "--name", "pxheld", "--timeout", "30s"); code != 0 {
		t.Fatalf("baton stop with a canary holding: exit %d: %s", code, out)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if _, err := tracker.WaitExit(wctx, svc.Cmd.Process.Pid); err != nil {
		t.Fatalf("the supervisor did not exit after baton stop: %v", err)
	}
}

// TestProxyCrashRestartQueues: a generation that crashes under load in
// proxy mode; its private socket stays open in the supervisor and the
// restarted generation answers what the proxy queued there: only the
// requests in flight on the crashing process may fail (at most one per
// client), none is refused for want of a generation.
func TestProxyCrashRestartQueues(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	startSupervised(t, "pxcrash", os.Environ(), "--proxy", "http", "--listen", "tcp://"+addr, "--restart-min", "300ms",
		"--", bins["hello"], "-addr", addr, "-exit-after", "1500ms")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const clients = 4
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{loadgen.KeepAliveGET: clients}, MaxRequests: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	first := supervisorStatus(t, "pxcrash").PID
	waitFor(t, 30*time.Second, "a restarted generation answering", func() bool {
		for pid, st := range load.Snapshot().PIDs {
			if pid != first && st.Responses > 50 {
				return true
			}
		}
		return false
	})
	rep := load.Stop()
	t.Logf("across a crash and restart: %d answers, %d failed %+v", rep.TotalOK(), rep.TotalFailed(), rep.Failures)
	if rep.TotalFailed() > clients {
		t.Errorf("%d requests failed across one crash; want at most %d (those in flight on the crashing process)", rep.TotalFailed(), clients)
	}
	for _, f := range rep.Failures {
		if strings.Contains(f.Err, "502") || strings.Contains(f.Err, "503") {
			t.Errorf("the proxy answered %s: a request found no generation", f.Err)
		}
	}
}

// startProxiedUnderLoad runs app (hello) under baton run --proxy http as
// name, with keep-alive GET and non-retried POST clients, and returns the
// load and the first generation's pid once it has answered 100 requests.
func startProxiedUnderLoad(t *testing.T, ctx context.Context, name, app string, args ...string) (*loadgen.Load, int) {
	t.Helper()
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, name, os.Environ(), append([]string{"--proxy", "http", "--listen", "tcp://" + addr,
		"--drain-timeout", "10s", "--", app, "-addr", addr}, args...)...)
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{
		loadgen.KeepAlivePOST: 6, loadgen.KeepAliveGET: 4,
	}, MaxRequests: 2_000_000})
	if err != nil {
		t.Fatal(err)
	}
	waitResponses(t, load, st.PID, 100)
	return load, st.PID
}

// TestProxyTCPCanaryPassed: behind --proxy tcp, hello's connections are
// passed to the generations, and the weights still decide where: a
// --canary 10 gets 10% ± 2 of new connections (each fresh-connection
// request is one, by X-Pid); after a roll-back it gets none of those sent
// afterwards; no request fails; the canary's connections were passed.
func TestProxyTCPCanaryPassed(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end load test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	addr := freeAddr(t, "tcp")
	svc, logf := startSupervised(t, "pxtcpcanary", os.Environ(), "--proxy", "tcp", "--listen", "tcp://"+addr,
		"--drain-timeout", "10s", "--", bins["hello"], "-addr", addr, "-idle-grace", "1s")
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stable := st.PID
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{loadgen.Fresh: 4}, MaxRequests: 200_000})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	waitResponses(t, load, stable, 100)

	code, out := runCLI("upgrade", "--name", "pxtcpcanary", "--json", "--canary", "10", "--step-interval", "1s", "--max-p99-ratio", "50") // shares, not the judgement (above)
	var rep struct {
		OK     bool
		Result *contract.UpgradeResult
	}
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || !rep.OK || rep.Result == nil || rep.Result.Canary == nil {
		t.Fatalf("baton upgrade --canary 10: exit %d: %s", code, out)
	}
	canary := rep.Result.Canary.PID
	mark := load.Snapshot()
	waitFor(t, 60*time.Second, "1,000 answers at 10%", func() bool { return load.Snapshot().TotalOK()-mark.TotalOK() >= 1000 })
	now := load.Snapshot()
	c, s := canaryShare(mark, now, canary, stable)
	share := 100 * float64(c) / float64(c+s)
	t.Logf("tcp canary at 10%%: %d of %d fresh connections' answers from the canary = %.2f%%", c, c+s, share)
	if o := othersAnswered(mark, now, canary, stable); share < 8 || share > 12 || o != 0 {
		t.Errorf("tcp canary at 10%%: %.2f%% of %d (want 10 ± 2), %d answers from other pids", share, c+s, o)
	}
	// baton status counts the passes per generation.
	if px := supervisorStatus(t, "pxtcpcanary").Supervisor.Proxy; px == nil || len(px.Backends) != 2 {
		t.Errorf("baton status during the tcp canary: %+v; want two backends", px)
	} else {
		for _, b := range px.Backends {
			if b.Passed == 0 || b.Passed > b.Requests {
				t.Errorf("baton status: gen %d (pid %d) passed %d of %d connections; want some, at most all", b.Generation, b.PID, b.Passed, b.Requests)
			}
		}
	}

	if code, out := runCLI("rollback", "--name", "pxtcpcanary"); code != 0 {
		t.Fatalf("baton rollback of the canary: exit %d: %s", code, out)
	}
	rolledBack := time.Now()
	mark = load.Snapshot()
	waitFor(t, 30*time.Second, "500 answers after the roll-back", func() bool { return load.Snapshot().TotalOK()-mark.TotalOK() >= 500 })
	if sent := load.Snapshot().PIDs[canary].LastSent; sent.After(rolledBack) {
		t.Errorf("after the roll-back, the canary answered a request sent %v after it", sent.Sub(rolledBack))
	}
	final := load.Stop()
	if final.TotalFailed() != 0 {
		t.Errorf("%d failed requests: %s", final.TotalFailed(), final)
	}
	pc := passCounts(t, logf.Name())
	t.Logf("the canary's client connections: %+v", pc)
	if pc.retired != 1 || pc.passed < int(c) || pc.relayed != 0 || pc.lost != 0 {
		t.Errorf("the rolled-back canary's connections: %+v; want its %d (at least) passed, none relayed or lost", pc, c)
	}
}
