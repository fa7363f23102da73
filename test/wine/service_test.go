//go:build linux

package wine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proctest"
)

// TestServiceOnWindows: `baton.exe service install` registers baton run as
// an SCM service under Wine; `service start`; hello.exe answers; 10
// upgrades through `baton.exe upgrade` and 3 through control code 128
// under keep-alive GETs and non-retried POSTs lose nothing, while a helper
// polling the SCM every 50 ms reads RUNNING with the same service pid
// throughout; a broken release is refused and the service stays RUNNING;
// `service stop` ends in STOPPED with no generation left; `service
// uninstall` leaves neither the service nor its Event Log source.
func TestServiceOnWindows(t *testing.T) {
	const name = "batonsvc"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	baton := func(args ...string) (int, string, string) {
		t.Helper()
		code, out, errOut, err := winCmd(ctx, bins["baton"], args...)
		if err != nil {
			t.Fatalf("baton.exe %s: %v", strings.Join(args, " "), err)
		}
		return code, out, errOut
	}
	mustBaton := func(args ...string) string {
		t.Helper()
		code, out, errOut := baton(args...)
		if code != 0 {
			t.Fatalf("baton.exe %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	// A service left by an earlier failed run goes first.
	baton("service", "uninstall", "--name", name)

	root, err := proctest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	os.Setenv("GOOS", "windows")
	os.Setenv("GOARCH", "amd64")
	helper, err := proctest.Build(root, t.TempDir(), map[string]string{"scmwatch": "./test/wine/testdata/scmwatch"}, nil)
	os.Unsetenv("GOOS")
	os.Unsetenv("GOARCH")
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	exe := filepath.Join(dir, "hello.exe")
	install(t, bins["hello-v1"], exe)
	addr := freePort(t)
	logFile := filepath.Join(dir, "svc.log")
	installArgs := []string{"service", "install", "--name", name, "--start", "manual",
		"--listen", "tcp://" + addr, "--drain-timeout", "20s", "--ready-timeout", "20s", "--log-file", winPath(logFile),
		"--", winPath(exe), "-addr", addr, "-name", name, "-idle-grace", "1s", "-drain-timeout", "20s"}
	generations := func() []hostProc { return hostProcs(`\baton\` + name + `\run\` + name + ".gen") }
	t.Cleanup(func() {
		c, cc := context.WithTimeout(context.Background(), time.Minute)
		defer cc()
		winCmd(c, bins["baton"], "service", "uninstall", "--name", name)
		for _, p := range generations() {
			syscallKill(p.pid)
		}
		if t.Failed() {
			for _, f := range []string{logFile, strings.TrimSuffix(logFile, ".log") + ".supervisor.log"} {
				b, _ := os.ReadFile(f)
				if len(b) > 6000 {
					b = b[len(b)-6000:]
				}
				t.Logf("%s (tail):\n%s", filepath.Base(f), b)
			}
		}
	})

	// --dry-run prints the service and registers nothing.
	dry := mustBaton(append([]string{"service", "install", "--dry-run"}, installArgs[2:]...)...)
	if !strings.Contains(dry, "run --as-service --name="+name) || !strings.Contains(dry, winPath(exe)) {
		t.Fatalf("--dry-run output lacks the command line:\n%s", dry)
	}
	if code, _, _ := baton("service", "status", "--name", name); code != contract.ExitUnreachable {
		t.Fatalf("after --dry-run: service status exit %d, want %d (no such service)", code, contract.ExitUnreachable)
	}
	t.Logf("dry run:\n%s", dry)

	out := mustBaton(installArgs...)
	t.Logf("install:\n%s", strings.TrimSpace(out))
	out = mustBaton("service", "start", "--name", name)
	svcPID, _ := strconv.Atoi(pidIn(out))
	if svcPID <= 0 {
		t.Fatalf("service start printed no pid: %q", out)
	}
	startedAt := time.Now()

	// The SCM state, polled every 50 ms from a Windows helper.
	watch := exec.Command("wine", helper["scmwatch"], name, "50ms")
	watch.Env = wineEnv
	watchIn, err := watch.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var watchOut, watchErr bytes.Buffer
	watch.Stdout, watch.Stderr = &watchOut, &watchErr
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer watch.Process.Kill()

	status := func() contract.Status {
		t.Helper()
		var st contract.Status
		if err := json.Unmarshal([]byte(mustBaton("status", "--name", name, "--json")), &st); err != nil {
			t.Fatal(err)
		}
		if st.Supervisor == nil || st.Supervisor.PID != svcPID {
			t.Fatalf("baton status: supervisor %+v, want the service's pid %d", st.Supervisor, svcPID)
		}
		return st
	}
	st0 := status()
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Pause: 5 * time.Millisecond, MaxRequests: 1_000_000,
		Workers: map[loadgen.Kind]int{loadgen.KeepAliveGET: 3, loadgen.KeepAlivePOST: 3}})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	if _, err := load.WaitPID(ctx, st0.PID); err != nil {
		t.Fatalf("hello.exe does not answer under the service: %v", err)
	}

	// 10 upgrades through baton upgrade, 3 through control code 128.
	prev := st0.PID
	for i := 0; i < 13; i++ {
		version := []string{"v2", "v1"}[i%2]
		install(t, bins["hello-"+version], exe)
		var pid int
		if i < 10 {
			code, out, errOut := baton("upgrade", "--name", name, "--json")
			var rep upgradeReport
			if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || !rep.OK || rep.Result == nil {
				t.Fatalf("upgrade %d: exit %d %v\n%s%s", i+1, code, err, out, errOut)
			}
			pid = rep.Result.PID
		} else {
			sent := time.Now()
			out := mustBaton("service", "control", "--name", name, "128")
			if !strings.Contains(out, "RUNNING") {
				t.Errorf("control 128: %s", out)
			}
			for {
				st := status()
				// The new pid may serve a moment before this upgrade's
				// outcome is recorded (Last still the previous one's).
				if l := st.Last; l != nil && l.At.After(sent.Add(-time.Second)) && st.PID != prev && l.Result != nil && l.Result.PID == st.PID {
					if !l.OK {
						t.Fatalf("control 128 (upgrade %d): last upgrade %+v", i+1, l)
					}
					pid = st.PID
					break
				}
				if time.Since(sent) > 60*time.Second {
					t.Fatalf("control 128 (upgrade %d): no upgrade recorded after 60s: %+v", i+1, st)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		if pid <= 0 || pid == prev || pid == svcPID {
			t.Fatalf("upgrade %d: new pid %d (was %d, service %d)", i+1, pid, prev, svcPID)
		}
		if _, err := load.WaitPID(ctx, pid); err != nil {
			t.Fatalf("upgrade %d: no response from pid %d: %v", i+1, pid, err)
		}
		if v := load.Snapshot().PIDs[pid].Version; v != version {
			t.Errorf("upgrade %d: pid %d serves %q, want %q", i+1, pid, v, version)
		}
		prev = pid
	}

	// A broken release is refused; the service stays RUNNING.
	install(t, bins["badapp-exit"], exe)
	code, out, errOut := baton("upgrade", "--name", name, "--json")
	var rep upgradeReport
	json.Unmarshal([]byte(out), &rep)
	if code != exitFailed || rep.Code != contract.CodeChildExited {
		t.Errorf("broken release: exit %d code %q (want %d, child_exited)\n%s%s", code, rep.Code, exitFailed, out, errOut)
	}
	install(t, bins["hello-v1"], exe)
	if st := status(); st.PID != prev || st.Phase != "serving" {
		t.Fatalf("after the broken release: pid %d %s, want %d serving", st.PID, st.Phase, prev)
	}
	before := load.Snapshot().PIDs[prev].Responses
	for deadline := time.Now().Add(10 * time.Second); load.Snapshot().PIDs[prev].Responses < before+20; {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d stopped answering after the refused upgrade", prev)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Code 130: the log file reopened (the outcome in the supervisor's log).
	mustBaton("service", "control", "--name", name, "130")

	final := load.Stop()
	t.Logf("load through 13 upgrades (10 baton upgrade, 3 control code 128) and a refused release:\n%s", final)
	if final.TotalFailed() != 0 {
		t.Errorf("%d requests failed", final.TotalFailed())
	}
	for kind, ks := range final.ByKind {
		if ks.OK == 0 {
			t.Errorf("%s: no request answered", kind)
		}
	}

	// The SCM state throughout: RUNNING, the same pid.
	watchIn.Close()
	wdone := make(chan error, 1)
	go func() { wdone <- watch.Wait() }()
	select {
	case <-wdone:
	case <-time.After(20 * time.Second):
		t.Fatalf("scmwatch did not end")
	}
	var polls, notRunning int
	var gaps []time.Duration
	var last int64
	sc := bufio.NewScanner(&watchOut)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			t.Errorf("scmwatch: %q", sc.Text())
			continue
		}
		ms, _ := strconv.ParseInt(f[0], 10, 64)
		if last != 0 {
			gaps = append(gaps, time.Duration(ms-last)*time.Millisecond)
		}
		last = ms
		polls++
		if f[1] != "4" || f[2] != strconv.Itoa(svcPID) {
			notRunning++
			if notRunning < 5 {
				t.Errorf("SCM poll %d: state %s pid %s, want RUNNING (4) pid %d", polls, f[1], f[2], svcPID)
			}
		}
	}
	// Watched throughout: enough polls, and no blind stretch (the number
	// of polls follows how long the upgrades took, not a fixed count).
	if polls < 20 {
		t.Errorf("only %d SCM polls (stderr %s)", polls, watchErr.String())
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	if len(gaps) > 0 && gaps[len(gaps)-1] > time.Second {
		t.Errorf("the SCM went unwatched for %v between two polls", gaps[len(gaps)-1])
	}
	if len(gaps) > 0 {
		t.Logf("SCM polled %d times over %v (gap median %v, max %v): %d not RUNNING with pid %d",
			polls, time.Since(startedAt).Round(time.Second), gaps[len(gaps)/2], gaps[len(gaps)-1], notRunning, svcPID)
	}

	// The control codes' outcome in the supervisor's log.
	supLog, _ := os.ReadFile(strings.TrimSuffix(logFile, ".log") + ".supervisor.log")
	for _, w := range []string{"control code 128: upgrade done", "control code 130: log file reopened", "service running"} {
		if n := strings.Count(string(supLog), w); n == 0 {
			t.Errorf("the supervisor's log lacks %q", w)
		}
	}
	if n := strings.Count(string(supLog), "control code 128: upgrade done"); n != 3 {
		t.Errorf("%d control code 128 outcomes logged, want 3", n)
	}
	if len(generations()) == 0 {
		t.Fatalf("no generation process found by its copy's path: the check below would prove nothing")
	}

	// Stop: STOPPED, no generation left.
	stopAt := time.Now()
	out = mustBaton("service", "stop", "--name", name)
	if !strings.Contains(out, "exit code 0") {
		t.Errorf("service stop: %q, want exit code 0", out)
	}
	var ss struct {
		State string `json:"state"`
	}
	json.Unmarshal([]byte(mustBaton("service", "status", "--name", name, "--json")), &ss)
	if ss.State != "STOPPED" {
		t.Errorf("after stop the SCM says %s", ss.State)
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(generations()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if left := generations(); len(left) > 0 {
		t.Fatalf("after service stop, generations still run: %+v", left)
	}
	t.Logf("service stop: STOPPED, no hello.exe left, after %v", time.Since(stopAt).Round(time.Millisecond))

	// Uninstall: no service, no event source.
	const key = `HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\` + name
	if code, _, _, _ := winCmd(ctx, "reg", "query", key); code != 0 {
		t.Errorf("the event source key %s is missing before uninstall (exit %d)", key, code)
	}
	t.Logf("uninstall: %s", strings.TrimSpace(mustBaton("service", "uninstall", "--name", name)))
	if code, _, _ := baton("service", "status", "--name", name); code != contract.ExitUnreachable {
		t.Errorf("after uninstall: service status exit %d, want %d (no such service)", code, contract.ExitUnreachable)
	}
	if code, out, _, _ := winCmd(ctx, "reg", "query", key); code == 0 {
		t.Errorf("the event source key is still there after uninstall:\n%s", out)
	}
}
