//go:build linux

package wine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
)

// supervised is `baton.exe run` under Wine with hello.exe as its app.
type supervised struct {
	t      *testing.T
	name   string
	dir    string
	exe    string // the installed hello.exe (the supervisor runs copies of it)
	runDir string // BATON_RUNTIME_DIR: where the generations' copies run from
	args   []string
	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{}
}

// startSupervisor starts `baton.exe run --name name --listen tcp://addr --
// hello.exe -addr addr ...` and waits until a generation serves.
func startSupervisor(t *testing.T, name, addr string, helloArgs ...string) *supervised {
	t.Helper()
	return startSupervisorWith(t, name, addr, nil, helloArgs...)
}

// startSupervisorWith is startSupervisor with more flags for baton run.
func startSupervisorWith(t *testing.T, name, addr string, runFlags []string, helloArgs ...string) *supervised {
	t.Helper()
	dir := t.TempDir()
	s := &supervised{t: t, name: name, dir: dir, exe: filepath.Join(dir, "hello.exe"), runDir: filepath.Join(dir, "run")}
	install(t, bins["hello-v1"], s.exe)
	// hello's own -name is dropped under baton run: the supervisor owns it.
	s.args = append([]string{"run", "--name", name, "--listen", "tcp://" + addr,
		"--drain-timeout", "20s", "--ready-timeout", "20s"}, runFlags...)
	s.args = append(append(s.args, "--", winPath(s.exe), "-addr", addr, "-name", name), helloArgs...)
	t.Cleanup(s.cleanup)
	s.start()
	return s
}

func (s *supervised) start() {
	t := s.t
	t.Helper()
	var err error
	if s.log, err = os.OpenFile(filepath.Join(s.dir, "baton-run.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command("wine", append([]string{bins["baton"]}, s.args...)...)
	s.cmd.Env = append(append([]string(nil), wineEnv...), contract.EnvRuntimeDir+"="+winPath(s.runDir))
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(s.cmd, s.exited)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		st, err := s.status(ctx)
		if err == nil && st.Phase == "serving" && st.Supervisor != nil {
			return
		}
		select {
		case <-s.exited:
			t.Fatalf("baton.exe run exited before serving:\n%s", s.logTail())
		default:
		}
		if ctx.Err() != nil {
			t.Fatalf("baton.exe run not serving under Wine: %v\n%s", err, s.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *supervised) status(ctx context.Context) (contract.Status, error) {
	var st contract.Status
	code, out, errOut, err := winCmd(ctx, bins["baton"], "status", "--name", s.name, "--json")
	if err != nil {
		return st, err
	}
	if code != 0 {
		return st, fmt.Errorf("baton status exited %d: %s%s", code, out, errOut)
	}
	return st, json.Unmarshal([]byte(out), &st)
}

func (s *supervised) mustStatus(ctx context.Context) contract.Status {
	s.t.Helper()
	st, err := s.status(ctx)
	if err != nil {
		s.t.Fatalf("baton status: %v", err)
	}
	if st.Supervisor == nil {
		s.t.Fatalf("baton status shows no supervisor: %+v", st)
	}
	return st
}

func (s *supervised) upgrade(ctx context.Context, extra ...string) upgradeReport {
	s.t.Helper()
	rep := upgradeReport{Triggered: time.Now()}
	code, out, errOut, err := winCmd(ctx, bins["baton"], append([]string{"upgrade", "--name", s.name, "--json"}, extra...)...)
	if err != nil {
		s.t.Fatal(err)
	}
	rep.ExitCode = code
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		s.t.Fatalf("baton upgrade (exit %d) printed no JSON: %v\n%s\n%s", code, err, out, errOut)
	}
	return rep
}

// waitExit waits until baton.exe run has exited (false after d).
func (s *supervised) waitExit(d time.Duration) bool {
	select {
	case <-s.exited:
		return true
	case <-time.After(d):
		return false
	}
}

func (s *supervised) cleanup() {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.exited:
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		winCmd(ctx, bins["baton"], "stop", "--name", s.name)
		cancel()
		if !s.waitExit(30 * time.Second) {
			s.cmd.Process.Kill()
			<-s.exited
		}
	}
	// Whatever a failed test left running from this service.
	for _, p := range s.generations() {
		if p.pid > 0 {
			syscallKill(p.pid)
		}
	}
	s.log.Close()
	if s.t.Failed() {
		s.t.Logf("baton run log (tail):\n%s", s.logTail())
	}
}

func (s *supervised) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "baton-run.log"))
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

type hostProc struct {
	pid  int // Linux pid of the Wine process
	args string
}

// generations lists the live (not zombie) processes on this host that run
// one of this service's generation copies: under Wine each Windows process
// is a host process whose command line is its Windows one, and the
// supervisor starts every generation from a copy in its runtime directory
// (NAME.genN.exe).
func (s *supervised) generations() []hostProc {
	return hostProcs(winPath(s.runDir) + `\` + s.name + ".gen")
}

// savedCopies lists the generations' copies in the runtime directory.
func (s *supervised) savedCopies() []string {
	m, _ := filepath.Glob(filepath.Join(s.runDir, s.name+".gen*.exe"))
	return m
}

func hostProcs(match string) []hostProc {
	var out []hostProc
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(match)) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) S ...: the state follows the last ')'.
		if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
			continue
		}
		out = append(out, hostProc{pid: pid, args: strings.ReplaceAll(string(cmdline), "\x00", " ")})
	}
	return out
}

// waitNoGenerations waits until no generation of s runs any more; it
// returns those still running after d.
func (s *supervised) waitNoGenerations(d time.Duration) []hostProc {
	deadline := time.Now().Add(d)
	for {
		left := s.generations()
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func syscallKill(pid int) {
	if p, err := os.FindProcess(pid); err == nil && pid > 0 {
		p.Kill()
	}
}

// terminateProcess ends a Windows process by its Windows pid the way
// TerminateProcess does (Wine's taskkill /F calls it).
func terminateProcess(t *testing.T, ctx context.Context, winPID int) {
	t.Helper()
	if winPID <= 0 {
		t.Fatalf("refusing to kill Windows pid %d", winPID)
	}
	code, out, errOut, err := winCmd(ctx, "taskkill", "/F", "/PID", strconv.Itoa(winPID))
	if err != nil || code != 0 {
		t.Fatalf("taskkill /F /PID %d: exit %d %v: %s%s", winPID, code, err, out, errOut)
	}
}

// killServing ends the serving generation pid with TerminateProcess and
// waits until the supervisor reports another one serving.
func (s *supervised) killServing(ctx context.Context, pid int) contract.Status {
	t := s.t
	t.Helper()
	terminateProcess(t, ctx, pid)
	for {
		st, err := s.status(ctx)
		if err == nil && st.PID != pid && st.PID > 0 && st.Phase == "serving" {
			return st
		}
		if ctx.Err() != nil {
			t.Fatalf("no generation serves after pid %d was killed: %v %+v\n%s", pid, err, st, s.logTail())
		}
		time.Sleep(100 * time.Millisecond) // polls the status, the event waited for
	}
}

// TestKillsOnWindows: the serving generation killed 30 times in a row,
// each time while `baton status` is asked every 100 ms, is restarted each
// time. This crashed Wine 8.0's wineserver within 5 to 16 kills (3 runs of
// 3) while handles were counted through the system handle table (see
// internal/handlecount): every Wine process then waited on a server that
// was gone, which looked like a frozen supervisor.
func TestKillsOnWindows(t *testing.T) {
	const name, kills = "winkills", 30
	addr := freePort(t)
	s := startSupervisorWith(t, name, addr, []string{"--max-restarts", "1000", "--stable-after", "300ms"}, "-idle-grace", "1s")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	prev := s.mustStatus(ctx).PID
	for i := range kills {
		st := s.killServing(ctx, prev)
		if st.OpenHandles <= 0 {
			t.Errorf("kill %d: generation %d reports %d open handles", i+1, st.PID, st.OpenHandles)
		}
		prev = st.PID
	}
	t.Logf("%d kills, each restarted; serving pid %d", kills, prev)
}

// TestRunOnWindows: `baton.exe run` supervising hello.exe under Wine,
// with a native loader (keep-alive GETs, non-retried POSTs, fresh
// connections, slow requests) counting every failed request:
// 20 upgrades (v1/v2 installed over hello.exe in turn) lose nothing and
// each switches to a new pid while the supervisor keeps its own; a broken
// release is refused and the old generation serves on; the serving
// generation killed with TerminateProcess is restarted; baton stop leaves
// no generation running, and neither does a supervisor killed with
// TerminateProcess (its kill-on-close job object takes them).
func TestRunOnWindows(t *testing.T) {
	const name = "winrun"
	addr := freePort(t)
	s := startSupervisor(t, name, addr, "-idle-grace", "1s", "-drain-timeout", "20s")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st0 := s.mustStatus(ctx)
	supPID := st0.Supervisor.PID
	t.Logf("supervisor: Windows pid %d; generation 1: pid %d", supPID, st0.PID)

	workers := map[loadgen.Kind]int{loadgen.KeepAliveGET: 3, loadgen.KeepAlivePOST: 3, loadgen.Fresh: 3, loadgen.Slow: 2}
	nWorkers := 0
	for _, n := range workers {
		nWorkers += n
	}
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: workers, Pause: 5 * time.Millisecond, MaxRequests: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	if _, err := load.WaitPID(ctx, st0.PID); err != nil {
		t.Fatal(err)
	}

	// 1. Upgrades: the new build is written over the installed hello.exe
	// (the supervisor runs copies, so the installed file is never locked).
	const upgrades = 20
	var switches, readies []time.Duration
	prev := st0.PID
	for i := 0; i < upgrades; i++ {
		version := []string{"v2", "v1"}[i%2]
		install(t, bins["hello-"+version], s.exe)
		rep := s.upgrade(ctx)
		if rep.ExitCode != 0 || !rep.OK || rep.Result == nil {
			t.Fatalf("upgrade %d: exit %d %s: %s", i+1, rep.ExitCode, rep.Code, rep.Error)
		}
		pid := rep.Result.PID
		if pid <= 0 || pid == prev || pid == supPID {
			t.Fatalf("upgrade %d: new pid %d (serving was %d, supervisor %d)", i+1, pid, prev, supPID)
		}
		seen, err := load.WaitPID(ctx, pid)
		if err != nil {
			t.Fatalf("upgrade %d: no response from new pid %d: %v", i+1, pid, err)
		}
		if v := load.Snapshot().PIDs[pid].Version; v != version {
			t.Errorf("upgrade %d: new generation serves %q, want %q", i+1, v, version)
		}
		st := s.mustStatus(ctx)
		if st.Supervisor.PID != supPID || st.PID != pid {
			t.Fatalf("upgrade %d: status shows supervisor %d serving %d, want supervisor %d serving %d", i+1, st.Supervisor.PID, st.PID, supPID, pid)
		}
		switches = append(switches, seen.Sub(rep.Triggered))
		readies = append(readies, rep.Result.ReadyAfter)
		prev = pid
	}
	afterUpgrades := load.Snapshot()
	t.Logf("after %d upgrades under Wine:\n%s", upgrades, afterUpgrades)
	if afterUpgrades.TotalFailed() != 0 {
		t.Errorf("%d requests failed during the upgrades", afterUpgrades.TotalFailed())
	}
	for kind, ks := range afterUpgrades.ByKind {
		if ks.OK == 0 {
			t.Errorf("%s: no request answered", kind)
		}
	}
	sort.Slice(switches, func(i, j int) bool { return switches[i] < switches[j] })
	sort.Slice(readies, func(i, j int) bool { return readies[i] < readies[j] })
	t.Logf("generation start -> ready under Wine: median %v, max %v", readies[len(readies)/2].Round(time.Millisecond), readies[len(readies)-1].Round(time.Millisecond))
	t.Logf("switch time (baton.exe upgrade started -> first response from the new pid): median %v, max %v",
		switches[len(switches)/2].Round(time.Millisecond), switches[len(switches)-1].Round(time.Millisecond))

	// 2. A broken release (exits at once) is refused; the old generation
	// serves on.
	install(t, bins["badapp-exit"], s.exe)
	rep := s.upgrade(ctx)
	if rep.ExitCode != exitFailed || rep.Code != "child_exited" {
		t.Errorf("broken release: exit %d code %q: %s (want exit %d, child_exited)", rep.ExitCode, rep.Code, rep.Error, exitFailed)
	}
	install(t, bins["hello-v1"], s.exe)
	if st := s.mustStatus(ctx); st.PID != prev || st.Phase != "serving" || st.Supervisor.PID != supPID {
		t.Fatalf("after the broken release: pid %d %s supervisor %d (want pid %d serving, supervisor %d)", st.PID, st.Phase, st.Supervisor.PID, prev, supPID)
	}
	// The old generation answers after the refusal.
	before := load.Snapshot().PIDs[prev].Responses
	for deadline := time.Now().Add(10 * time.Second); load.Snapshot().PIDs[prev].Responses < before+20; {
		if time.Now().After(deadline) {
			t.Fatalf("generation %d stopped answering after the refused upgrade", prev)
		}
		time.Sleep(50 * time.Millisecond)
	}
	afterBroken := load.Snapshot()
	if n := afterBroken.TotalFailed() - afterUpgrades.TotalFailed(); n != 0 {
		t.Errorf("%d requests failed around the refused upgrade", n)
	}
	t.Logf("broken release refused: exit %d, %s: %s", rep.ExitCode, rep.Code, rep.Error)
	// Its last words are in the supervisor's log, tagged with its pid
	// (they were written before the supervisor knew it).
	if badPID := pidIn(rep.Error); badPID == "" || !strings.Contains(s.logTail(), fmt.Sprintf("pid %s] badapp: boom", badPID)) {
		t.Errorf("the broken release's stderr is not in the supervisor's log tagged with its pid %q", badPID)
	}

	// 3. The serving generation killed (TerminateProcess): the supervisor
	// starts another one; only requests in flight on it may fail.
	failedBefore := afterBroken.TotalFailed()
	killedAt := time.Now()
	restarted := s.killServing(ctx, prev)
	seen, err := load.WaitPID(ctx, restarted.PID)
	if err != nil {
		t.Fatal(err)
	}
	if restarted.Supervisor == nil || restarted.Supervisor.PID != supPID {
		t.Errorf("after the kill the supervisor is %+v, want pid %d", restarted.Supervisor, supPID)
	}
	afterKill := load.Snapshot()
	lost := afterKill.TotalFailed() - failedBefore
	t.Logf("serving generation pid %d killed with TerminateProcess: generation %d pid %d serves %v later (restarts %d); %d requests failed (at most %d in flight):",
		prev, restarted.Generation, restarted.PID, seen.Sub(killedAt).Round(time.Millisecond), restarted.Supervisor.Restarts, lost, nWorkers)
	for _, f := range afterKill.Failures {
		if f.At.After(killedAt) {
			t.Logf("  failed: %s %s pid=%d +%v: %s", f.Kind, f.Phase, f.PID, f.At.Sub(killedAt).Round(time.Millisecond), f.Err)
		}
	}
	if lost > int64(nWorkers) {
		t.Errorf("%d requests failed after the kill: more than the %d that can be in flight", lost, nWorkers)
	}
	final := load.Stop()
	t.Logf("load under Wine, whole run:\n%s", final)

	// 4. baton stop: the supervisor drains and exits, no generation left.
	code, out, errOut, err := winCmd(ctx, bins["baton"], "stop", "--name", name)
	if err != nil || code != 0 {
		t.Fatalf("baton stop: exit %d %v: %s%s", code, err, out, errOut)
	}
	stopAt := time.Now()
	if !s.waitExit(60 * time.Second) {
		t.Fatalf("baton.exe run still running 60s after baton stop")
	}
	if left := s.waitNoGenerations(10 * time.Second); len(left) > 0 {
		t.Fatalf("after baton stop, generations still run: %+v", left)
	}
	t.Logf("baton stop: supervisor and generations gone after %v", time.Since(stopAt).Round(time.Millisecond))
	// The saved copies of the generations go with them (a running image
	// cannot be deleted: each is removed once its process has ended).
	if copies := s.savedCopies(); len(copies) > 0 {
		t.Errorf("saved copies left after baton stop: %v", copies)
	}

	// 5. Started again, then the supervisor itself killed with
	// TerminateProcess: its kill-on-close job object ends the generations.
	s.start()
	st := s.mustStatus(ctx)
	install(t, bins["hello-v2"], s.exe)
	if rep := s.upgrade(ctx); rep.ExitCode != 0 { // two generations' worth of processes, one draining at most
		t.Fatalf("upgrade after the restart: exit %d %s: %s", rep.ExitCode, rep.Code, rep.Error)
	}
	if len(s.generations()) == 0 {
		t.Fatalf("no generation process found under %s: the check below would prove nothing", s.runDir)
	}
	killAt := time.Now()
	terminateProcess(t, ctx, st.Supervisor.PID)
	if !s.waitExit(30 * time.Second) {
		t.Fatalf("baton.exe (Windows pid %d) still running 30s after TerminateProcess", st.Supervisor.PID)
	}
	if left := s.waitNoGenerations(15 * time.Second); len(left) > 0 {
		t.Fatalf("the supervisor was killed but its generations still run: %+v", left)
	}
	t.Logf("supervisor killed with TerminateProcess: no generation left after %v", time.Since(killAt).Round(time.Millisecond))

	// 6. The killed supervisor could not remove its copies; the next one
	// of the same name sweeps them, upgrades, and stops clean.
	left := s.savedCopies()
	s.start()
	install(t, bins["hello-v1"], s.exe)
	if rep := s.upgrade(ctx); rep.ExitCode != 0 {
		t.Fatalf("upgrade after a killed supervisor: exit %d %s: %s", rep.ExitCode, rep.Code, rep.Error)
	}
	if code, out, errOut, err := winCmd(ctx, bins["baton"], "stop", "--name", name); err != nil || code != 0 {
		t.Fatalf("baton stop: exit %d %v: %s%s", code, err, out, errOut)
	}
	if !s.waitExit(60 * time.Second) {
		t.Fatalf("baton.exe run still running 60s after baton stop")
	}
	if procs := s.waitNoGenerations(10 * time.Second); len(procs) > 0 {
		t.Fatalf("after baton stop, generations still run: %+v", procs)
	}
	copies := s.savedCopies()
	t.Logf("saved copies: %d left by the killed supervisor, %d after the next one stopped", len(left), len(copies))
	if len(copies) > 0 {
		t.Errorf("saved copies left: %v", copies)
	}
}
