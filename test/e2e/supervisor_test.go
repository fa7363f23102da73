//go:build linux

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proctest"
	"github.com/baton-go/baton/supervisor"
)

// startSupervised runs `baton run` with args and waits until it serves.
func startSupervised(t *testing.T, name string, env []string, args ...string) (*proctest.Service, *os.File) {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), "supervisor.log"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := proctest.Start(ctx, tracker, bins["baton"], name, env, logf, bins["baton"], append([]string{"run", "--name", name}, args...)...)
	if err != nil {
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("%v\n%s", err, b)
	}
	t.Cleanup(func() {
		if b, _ := os.ReadFile(logf.Name()); strings.Contains(string(b), "DATA RACE") {
			t.Errorf("the race detector found a data race in the supervisor:\n%s", b)
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("supervisor log (tail):\n%s", b)
		}
		stopService(t, svc)
		logf.Close()
	})
	return svc, logf
}

// TestSupervisorUpgradesUnderLoad: hello under `baton run`, 20 upgrades
// through `baton upgrade` under the mixed load: no failed request, the
// supervisor's pid never changes, every old generation is reaped.
func TestSupervisorUpgradesUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end load test")
	}
	addr := freeAddr(t, "tcp")
	sock := filepath.Join(workDir, "sup-hello.sock")
	svc, _ := startSupervised(t, "suphello", os.Environ(), "--listen", "tcp://"+addr, "--listen", "unix://"+sock,
		"--drain-timeout", "10s", "--", bins["hello"], "-addr", addr, "-unix", sock, "-idle-grace", "1s")
	supPID := svc.Cmd.Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	load := startMixedLoad(t, ctx, addr, sock, "")
	waitResponses(t, load.tcp, st.PID, 100)
	olds, current := upgradeEvery(t, ctx, svc, load.tcp, st.PID, 20, 500*time.Millisecond)
	waitResponses(t, load.tcp, current, 100) // the last generation serves a while too
	load.stopAndCheck(t)
	st, err = svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != current || st.Generation != 21 {
		t.Errorf("status: pid %d generation %d, want %d and 21", st.PID, st.Generation, current)
	}
	if svc.Cmd.Process.Pid != supPID {
		t.Fatal("supervisor pid changed")
	}
	// The app sees its installed path as argv[0], not the supervisor's copy.
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(current) + "/cmdline"); err == nil {
		if argv0, _, _ := strings.Cut(string(b), "\x00"); argv0 != bins["hello"] {
			t.Errorf("argv[0] of the serving generation is %q, want %q", argv0, bins["hello"])
		}
	}
	if code, out := runCLI("rollback", "--name", "suphello"); code != 0 {
		t.Errorf("baton rollback: exit %d: %s", code, out)
	}
	// The generations' output went through the supervisor, tagged.
	code, out := runCLI("logs", "--name", "suphello", "--lines", "2000")
	if code != 0 || !strings.Contains(out, "[gen 1 pid ") || !strings.Contains(out, "[gen 21 pid "+strconv.Itoa(current)+"]") {
		t.Errorf("baton logs: exit %d, output without the generations' tagged lines:\n%.2000s", code, out)
	}
	// Old generations are the supervisor's children: it reaps them (the
	// tracker cannot: they are not ours; it sees them gone once reaped).
	for _, pid := range olds {
		tracker.Track(pid)
		wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
		_, err := tracker.WaitExit(wctx, pid)
		wcancel()
		if err != nil && proctest.IsZombie(pid) {
			t.Fatalf("old generation %d is a zombie", pid)
		}
		if err != nil {
			t.Fatalf("old generation %d still running: %v", pid, err)
		}
	}
}

// TestSupervisorPlainAppHTTPProbe: an app that only knows socket activation
// (examples/plain), readiness by HTTP probe, upgraded under load.
func TestSupervisorPlainAppHTTPProbe(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end load test")
	}
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "supplain", os.Environ(), "--listen", "tcp://"+addr,
		"--ready-http", "http://"+addr+"/healthz", "--", bins["plain"], "-startup-delay", "300ms", "-idle-grace", "1s")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	load := startMixedLoad(t, ctx, addr, "", "")
	for i := 0; i < 8; i++ {
		rep, err := svc.Upgrade(ctx)
		if err != nil || !rep.OK {
			t.Fatalf("upgrade %d: %v %+v", i+1, err, rep)
		}
		// The probe went to the new generation: its start-up delay shows.
		if rep.Result.ReadyAfter < 300*time.Millisecond {
			t.Errorf("upgrade %d: ready after %v, before the app's 300ms start-up: the probe was answered by the old generation", i+1, rep.Result.ReadyAfter)
		}
		if _, err := load.tcp.WaitPID(ctx, rep.Result.PID); err != nil {
			t.Fatal(err)
		}
	}
	load.stopAndCheck(t)
}

// TestSupervisorRestartsCrashedGeneration: a generation killed outside an
// upgrade is restarted on the same sockets; a connection made meanwhile
// waits in the accept queue instead of being refused.
func TestSupervisorRestartsCrashedGeneration(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "supcrash", os.Environ(), "--listen", "tcp://"+addr, "--restart-min", "300ms",
		"--", bins["hello"], "-addr", addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := signalPID(t, st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Connect while no generation runs: the supervisor's socket queues it.
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("connection refused while the generation was restarting: %v", err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
	buf := make([]byte, 4096)
	n, _ := c.Read(buf)
	c.Close()
	if !strings.Contains(string(buf[:n]), "200 OK") {
		t.Fatalf("request made during the restart: %q", buf[:n])
	}
	// The new generation may answer before it reports ready: wait for it.
	waitFor(t, 30*time.Second, "a new generation serving after the crash", func() bool {
		st2, err := svc.Status(ctx)
		if err == nil && st2.PID != st.PID && st2.Phase == "serving" {
			tracker.Track(st2.PID)
			return true
		}
		return false
	})
}

// TestSupervisorGivesUpOnCrashLoop: an app that crashes right after
// starting is restarted with back-off, then the supervisor exits non-zero.
func TestSupervisorGivesUpOnCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	cmd := exec.Command(bins["baton"], "run", "--name", "suploop", "--listen", "tcp://"+addr, "--ready-delay", "50ms",
		"--restart-min", "50ms", "--max-restarts", "3", "--", bins["plain"], "-crash-after", "200ms")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("baton run in a crash loop: %v, want exit 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "giving up") || strings.Count(string(out), "restarting it") < 3 {
		t.Fatalf("output does not show the restarts and the give-up:\n%s", out)
	}
	// --max-restarts 0: the first crash ends the supervisor.
	cmd = exec.Command(bins["baton"], "run", "--name", "suploop", "--listen", "tcp://"+addr, "--ready-delay", "50ms",
		"--max-restarts", "0", "--", bins["plain"], "-crash-after", "200ms")
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("baton run --max-restarts 0: %v, want exit 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "restarts are off") || strings.Contains(string(out), "; restarting it") {
		t.Fatalf("--max-restarts 0 restarted, or did not say why it stopped:\n%s", out)
	}
}

// TestSupervisorNotifiesSystemd checks the supervisor's own sd_notify
// messages on a real datagram socket given as NOTIFY_SOCKET.
func TestSupervisorNotifiesSystemd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	path := filepath.Join(workDir, "sup-notify.sock")
	os.Remove(path)
	ns, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ns.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	expect := func(want ...string) {
		t.Helper()
		deadline := time.After(15 * time.Second)
		for {
			select {
			case m := <-msgs:
				ok := true
				for _, w := range want {
					ok = ok && strings.Contains(m, w)
				}
				if ok {
					return
				}
			case <-deadline:
				t.Fatalf("no sd_notify message with %q", want)
			}
		}
	}
	addr := freeAddr(t, "tcp")
	env := append(os.Environ(), "NOTIFY_SOCKET="+path)
	svc, _ := startSupervised(t, "supnotify", env, "--listen", "tcp://"+addr, "--", bins["hello"], "-addr", addr)
	expect("READY=1", "STATUS=generation 1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if rep, err := svc.Upgrade(ctx); err != nil || !rep.OK {
		t.Fatalf("upgrade: %v %+v", err, rep)
	}
	expect("RELOADING=1", "MONOTONIC_USEC=")
	expect("READY=1", "STATUS=generation 2")
	if code, _ := runCLI("stop", "--name", "supnotify"); code != 0 {
		t.Fatalf("baton stop exited %d", code)
	}
	expect("STOPPING=1")
}

// TestSupervisorKilledLeavesNothing: kill -9 of the supervisor takes every
// generation with it (Pdeathsig), even one that ignores SIGTERM.
func TestSupervisorKilledLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	// pdeathsig on Linux; the watchdog is what macOS and the other BSDs
	// use, proven here on Linux.
	for _, guard := range []string{"pdeathsig", "watchdog"} {
		t.Run(guard, func(t *testing.T) { supervisorKilled(t, guard) })
	}
}

func supervisorKilled(t *testing.T, guard string) {
	addr := freeAddr(t, "tcp")
	cmd := exec.Command(bins["baton"], "run", "--name", "supkill", "--orphan-guard", guard, "--listen", "tcp://"+addr, "--", bins["hello"], "-addr", addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc := &proctest.Service{Name: "supkill", Baton: bins["baton"], Env: os.Environ(), Cmd: cmd, Tracker: tracker}
	waitPhase(t, ctx, svc, "serving")
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := svc.Upgrade(ctx)
	if err != nil || !rep.OK {
		t.Fatalf("upgrade: %v %+v", err, rep)
	}
	cmd.Process.Kill()
	cmd.Wait()
	// The generations are reparented to us (the tracker is the subreaper):
	// it reaps them once they are dead.
	for _, pid := range []int{st.PID, rep.Result.PID} {
		tracker.Track(pid)
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := tracker.WaitExit(wctx, pid)
		wcancel()
		if err != nil {
			signalEach(syscall.SIGKILL, pid)
			t.Fatalf("generation %d still running after the supervisor was killed: %v", pid, err)
		}
	}
}

// upgradeEvery upgrades svc n times, one every interval, each time waiting
// until the new generation has answered load; it returns the replaced
// generations' pids and the one serving at the end.
func upgradeEvery(t *testing.T, ctx context.Context, svc *proctest.Service, load *loadgen.Load, first, n int, interval time.Duration) (olds []int, current int) {
	t.Helper()
	current = first
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := range n {
		<-tick.C
		rep, err := svc.Upgrade(ctx)
		if err != nil || !rep.OK {
			t.Fatalf("upgrade %d: %v %+v", i+1, err, rep)
		}
		if _, err := load.WaitPID(ctx, rep.Result.PID); err != nil {
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		olds = append(olds, current)
		current = rep.Result.PID
	}
	return olds, current
}

// runCLI runs the baton CLI and returns its exit code and output.
func runCLI(args ...string) (int, string) {
	cmd := exec.Command(bins["baton"], args...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		return -1, err.Error()
	}
	return 0, string(out)
}

// TestSupervisorRollbackOnProbation: a release that crashes 1 s after it
// became ready is rolled back to the previous binary; only requests in
// flight on the crashing process may fail (counted and reported); status
// and the upgrade's exit code say what happened.
func TestSupervisorRollbackOnProbation(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir := t.TempDir()
	app := filepath.Join(dir, "plain")
	installCopy(t, bins["plain"], app)
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "suproll", os.Environ(), "--listen", "tcp://"+addr,
		"--ready-http", "http://"+addr+"/healthz", "--probation", "3s", "--", app, "-idle-grace", "300ms")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{
		loadgen.KeepAliveGET: 2, loadgen.KeepAlivePOST: 2, loadgen.Fresh: 2}, MaxRequests: 2_000_000})
	if err != nil {
		t.Fatal(err)
	}
	installCopy(t, bins["plain-crashy"], app)
	rep, err := svc.Upgrade(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ExitCode != exitFailed || rep.Code != "rolled_back" || !strings.Contains(rep.Error, "failed its probation") {
		t.Fatalf("upgrade to a crashing release: exit %d code %q: %s", rep.ExitCode, rep.Code, rep.Error)
	}
	now, err := svc.Status(ctx)
	if err != nil || now.Phase != "serving" || now.PID == st.PID || now.Last == nil || now.Last.Code != "rolled_back" {
		t.Fatalf("status after the rollback: %v %+v", err, now)
	}
	if _, err := load.WaitPID(ctx, now.PID); err != nil {
		t.Fatal(err)
	}
	waitResponses(t, load, now.PID, 100)
	r := load.Stop()
	if v := r.PIDs[now.PID].Version; v != "dev" {
		t.Fatalf("after the rollback pid %d serves %q, want the previous release", now.PID, v)
	}
	var crashy int64
	for pid, ps := range r.PIDs {
		if ps.Version == "crashy" {
			crashy += ps.Responses
			_ = pid
		}
	}
	t.Logf("requests: %d ok, %d failed (in flight on the crashing process); %d answered by the crashing release before it died", r.TotalOK(), r.TotalFailed(), crashy)
	for _, f := range r.Failures {
		if f.PID != 0 && r.PIDs[f.PID].Version != "crashy" {
			t.Errorf("a request failed on a generation that did not crash: %+v", f)
		}
	}
	if r.TotalFailed() > 6 {
		t.Errorf("%d failed requests: more than the 6 clients could have had in flight on the crashing process", r.TotalFailed())
	}
}

// TestSupervisorWatchBinary: with --watch-binary, installing a new binary is
// enough: the supervisor upgrades by itself.
func TestSupervisorWatchBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir := t.TempDir()
	app := filepath.Join(dir, "hello")
	installCopy(t, bins["hello"], app)
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "supwatch", os.Environ(), "--listen", "tcp://"+addr, "--watch-binary", "--", app, "-addr", addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	installCopy(t, bins["hello-v2"], app)
	waitFor(t, 30*time.Second, "an upgrade after the binary changed", func() bool {
		st, err := svc.Status(ctx)
		if err == nil && st.Generation == 2 && st.Phase == "serving" {
			tracker.Track(st.PID)
			return true
		}
		return false
	})
}

// TestSupervisorStopDuringRestart: a stop asked while a crashed generation
// waits for its back-off is a stop (exit 0, promptly), not a give-up.
func TestSupervisorStopDuringRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	cmd := exec.Command(bins["baton"], "run", "--name", "supstoprs", "--listen", "tcp://"+addr, "--restart-min", "5s",
		"--", bins["hello"], "-addr", addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc := &proctest.Service{Name: "supstoprs", Baton: bins["baton"], Env: os.Environ(), Cmd: cmd, Tracker: tracker}
	waitPhase(t, ctx, svc, "serving")
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := signalPID(t, st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, ctx, svc, "restarting")
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("baton run after SIGTERM during a restart: %v, want exit 0", err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("stop took %v: it waited for the restart back-off", took)
	}
}

// TestSupervisorNewGenerationCrashWhileOldDrains: the serving generation
// crashing while the previous one still drains a long request is restarted
// at once, not after the old one's drain.
func TestSupervisorNewGenerationCrashWhileOldDrains(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "supcrash2", os.Environ(), "--listen", "tcp://"+addr, "--drain-timeout", "20s",
		"--restart-min", "100ms", "--", bins["hello"], "-addr", addr, "-idle-grace", "200ms")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st1, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slow := holdRequest(t, addr, 6000) // the 6 s request is on generation 1
	if slow.PID != st1.PID {
		t.Fatalf("the long request went to pid %d, generation 1 is %d", slow.PID, st1.PID)
	}
	rep, err := svc.Upgrade(ctx)
	if err != nil || !rep.OK {
		t.Fatalf("upgrade: %v %+v", err, rep)
	}
	if err := signalPID(t, rep.Result.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Sooner than generation 1's 6 s drain: the restart does not wait for it.
	waitFor(t, 5*time.Second, "a new generation after the serving one crashed (the old one still draining)", func() bool {
		st, err := svc.Status(ctx)
		if err == nil && st.Phase == "serving" && st.PID != rep.Result.PID && st.PID != st1.PID {
			tracker.Track(st.PID)
			return true
		}
		return false
	})
	if err := slow.wait(); err != nil {
		t.Fatalf("the long request on the draining generation failed: %v", err)
	}
}

// Under `baton run` the same travels over the supervisor link (the sockets
// come by socket activation), and the old generations drain through their
// Exit channel.
func TestSupervisorHandsOverFileAndState(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	logPath := filepath.Join(t.TempDir(), "events.log")
	svc, logf := startSupervised(t, "supfiles", os.Environ(), "--listen", "tcp://"+addr, "--drain-signal", "SIGUSR2",
		"--", bins["hello"], "-addr", addr, "-event-log", logPath)
	checkFileAndStateTravel(t, svc, addr, logPath)
	// SIGUSR2 would have killed hello: the old generations were told to
	// drain over the link, and drained.
	var b []byte
	if !pollUntil(10*time.Second, func() bool {
		b, _ = os.ReadFile(logf.Name())
		return strings.Count(string(b), "handed over; draining") >= 3
	}) {
		t.Fatalf("the old generations did not drain through their Exit channel:\n%s", b)
	}
	if strings.Contains(string(b), "signal: user defined signal 2") {
		t.Fatalf("an old generation got the drain signal instead of the link's drain request:\n%s", b)
	}
}

// TestSupervisorStatusCountsConnections: `baton status` tells how many
// connections each generation holds (Linux), and the draining generation
// keeps the ones it still serves.
func TestSupervisorStatusCountsConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "supconns", os.Environ(), "--listen", "tcp://"+addr, "--drain-timeout", "20s",
		"--", bins["hello"], "-addr", addr, "-idle-grace", "10s")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Three connections held open by a slow request each.
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /sleep?ms=8000 HTTP/1.1\r\nHost: x\r\n\r\n")
		conns = append(conns, c)
	}
	gens := func() map[string]supervisor.GenInfo {
		code, out := runCLI("status", "--name", "supconns", "--json")
		if code != 0 {
			t.Fatalf("baton status: exit %d: %s", code, out)
		}
		var st supervisor.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.Supervisor == nil {
			t.Fatalf("status: %v\n%s", err, out)
		}
		m := map[string]supervisor.GenInfo{}
		for _, g := range st.Supervisor.Generations {
			m[g.State] = g
		}
		return m
	}
	waitConns := func(state string, want int) {
		t.Helper()
		var g supervisor.GenInfo
		if !pollUntil(10*time.Second, func() bool {
			var ok bool
			g, ok = gens()[state]
			return ok && g.Conns != nil && *g.Conns == want
		}) {
			t.Fatalf("the %s generation holds %v connections (want %d): %+v", state, g.Conns, want, g)
		}
	}
	waitConns("serving", 3)
	rep, err := svc.Upgrade(ctx)
	if err != nil || !rep.OK {
		t.Fatalf("upgrade: %v %+v", err, rep)
	}
	waitConns("draining", 3) // still serving its slow requests
	waitConns("serving", 0)
	if code, out := runCLI("status", "--name", "supconns"); code != 0 || !strings.Contains(out, "conns 3") {
		t.Errorf("baton status does not show the connections: exit %d\n%s", code, out)
	}
	// The sha256 of what each generation runs (computed once it is ready).
	b, err := os.ReadFile(bins["hello"])
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%x", sha256.Sum256(b))
	waitFor(t, 10*time.Second, "status naming the sha256 "+want, func() bool { return gens()["serving"].SHA256 == want })
	_ = conns
}

// TestSupervisorRefusesAnotherDeploysBinary: an upgrade that says which
// binary it installed (ExpectSHA256, sent by baton upgrade --binary) is
// refused as busy when the installed file is another one (a concurrent
// deploy switched it), and nothing is switched; with the right sum it
// goes through.
func TestSupervisorRefusesAnotherDeploysBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "supexpect", os.Environ(), "--listen", "tcp://"+addr, "--", bins["hello"], "-addr", addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ctl.Do(ctx, "supexpect", ctl.Request{Op: ctl.OpUpgrade, ExpectSHA256: strings.Repeat("0", 64)})
	if err != nil || resp.OK || resp.Code != contract.CodeBusy || !strings.Contains(resp.Error, "changed since") {
		t.Fatalf("upgrade expecting another binary: %v %+v", err, resp)
	}
	if st, err := svc.Status(ctx); err != nil || st.PID != before.PID || st.Phase != "serving" {
		t.Fatalf("after the refusal: %v pid %d %s, want pid %d serving", err, st.PID, st.Phase, before.PID)
	}
	resp, err = ctl.Do(ctx, "supexpect", ctl.Request{Op: ctl.OpUpgrade, ExpectSHA256: fileSHA(t, bins["hello"])})
	if err != nil || !resp.OK {
		t.Fatalf("upgrade expecting the installed binary: %v %+v", err, resp)
	}
}
