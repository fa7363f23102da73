//go:build linux

package wine

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/loadgen"
)

// TestRunOnWindowsFeatures: the rest of `baton.exe run` under Wine, one
// supervisor (--probation 3s --ready-http .../healthz, --log-file rotated
// at a few KiB) under the native load of TestRunOnWindows:
//   - status --json: the supervisor's pid, the serving generation's pid and
//     number, its open handles, every generation's sha256 once ready;
//   - rollback after an upgrade: the previous version answers again;
//   - probation: a release that turns unhealthy, and one that exits, soon
//     after it got ready are rolled back (upgrade exits 1, rolled_back);
//   - upgrade --binary: checked, staged, installed; releases lists both,
//     and a rollback then puts the previous release back on disk too;
//   - logs: the app's lines tagged [gen G pid P], in baton logs and in the
//     --log-file, which rotated.
func TestRunOnWindowsFeatures(t *testing.T) {
	const (
		name       = "winfeat"
		logMaxSize = 2048
	)
	addr := freePort(t)
	logFile := filepath.Join(t.TempDir(), "app.log")
	s := startSupervisorWith(t, name, addr, []string{
		"--probation", "3s", "--ready-http", "http://" + addr + "/healthz",
		"--log-file", winPath(logFile), "--log-max-size", strconv.Itoa(logMaxSize), "--log-keep", "3",
	}, "-idle-grace", "1s", "-drain-timeout", "20s")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sums := map[string]string{}
	for _, b := range []string{"hello-v1", "hello-v2", "hello-sick", "hello-crash"} {
		sums[b] = fileSHA256(t, bins[b])
	}

	// 1. Status of the first generation.
	st := s.mustStatus(ctx)
	supPID, gen1PID := st.Supervisor.PID, st.PID
	if supPID <= 0 || gen1PID <= 0 || supPID == gen1PID || st.Generation != 1 || st.Phase != "serving" {
		t.Fatalf("status: supervisor pid %d, serving pid %d generation %d %s (want two pids, generation 1 serving)", supPID, gen1PID, st.Generation, st.Phase)
	}
	gi := s.waitGenSHA256(ctx, 1)
	if gi.PID != gen1PID || gi.SHA256 != sums["hello-v1"] || gi.State != "serving" {
		t.Errorf("status: generation 1 is %+v, want pid %d serving, sha256 %s (hello-v1)", gi, gen1PID, sums["hello-v1"])
	}
	if st.OpenHandles <= 0 {
		t.Errorf("status: open_handles %d for the serving generation, want > 0", st.OpenHandles)
	}
	t.Logf("status: supervisor pid %d; generation 1 pid %d serving, %d open handles, sha256 %.16s…, ready after %v",
		supPID, gen1PID, st.OpenHandles, gi.SHA256, gi.ReadyAfter.Round(time.Millisecond))

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
	s.waitServes(ctx, load, gen1PID, "v1")
	failed := func() int64 { return load.Snapshot().TotalFailed() }
	gens := map[int]int{1: gen1PID} // generation -> pid, for the log check

	// 2. An upgrade to v2, then baton rollback: v1 answers again.
	install(t, bins["hello-v2"], s.exe)
	rep := s.upgrade(ctx)
	if rep.ExitCode != 0 || rep.Result == nil {
		t.Fatalf("upgrade to v2: exit %d %s: %s", rep.ExitCode, rep.Code, rep.Error)
	}
	gens[rep.Result.Generation] = rep.Result.PID
	s.waitServes(ctx, load, rep.Result.PID, "v2")
	gi = s.waitGenSHA256(ctx, rep.Result.Generation)
	if gi.SHA256 != sums["hello-v2"] {
		t.Errorf("status: generation %d runs sha256 %s, want %s (hello-v2)", gi.Generation, gi.SHA256, sums["hello-v2"])
	}
	t.Logf("upgrade to v2 (probation 3s passed): generation %d pid %d, ready after %v, sha256 %.16s…",
		rep.Result.Generation, rep.Result.PID, rep.Result.ReadyAfter.Round(time.Millisecond), gi.SHA256)
	f0 := failed()
	back := s.rollback(ctx)
	gens[back.Generation] = back.PID
	s.waitServes(ctx, load, back.PID, "v1")
	if gi = s.waitGenSHA256(ctx, back.Generation); gi.SHA256 != sums["hello-v1"] {
		t.Errorf("status after rollback: generation %d runs sha256 %s, want %s (hello-v1)", gi.Generation, gi.SHA256, sums["hello-v1"])
	}
	if n := failed() - f0; n != 0 {
		t.Errorf("%d requests failed around baton rollback", n)
	}
	t.Logf("baton rollback: exit 0, generation %d pid %d serves v1 again, ready after %v; 0 failed requests",
		back.Generation, back.PID, back.ReadyAfter.Round(time.Millisecond))

	// 3. Probation: a release whose /healthz turns 503 500ms after Ready
	// is rolled back; it drains like any old generation (nothing fails).
	f0 = failed()
	install(t, bins["hello-sick"], s.exe)
	rep = s.upgrade(ctx)
	servingPID := s.checkRolledBack(ctx, load, rep, "unhealthy", back.PID, gens)
	if n := failed() - f0; n != 0 {
		t.Errorf("%d requests failed around the unhealthy release's rollback", n)
	}
	t.Logf("unhealthy release on probation: upgrade exit %d, %s; 0 failed requests", rep.ExitCode, rep.Code)

	// A release that exits 500ms after Ready: only the requests in flight
	// on it may fail.
	f0 = failed()
	crashAt := time.Now()
	install(t, bins["hello-crash"], s.exe)
	rep = s.upgrade(ctx)
	servingPID = s.checkRolledBack(ctx, load, rep, "exits", servingPID, gens)
	lost := failed() - f0
	// (baton upgrade --json gives child_exit for child_exited only: here
	// the message says how it ended.)
	if !strings.Contains(rep.Error, "exit code 2") {
		t.Errorf("exiting release: the error does not say it exited with code 2: %s", firstLine(rep.Error))
	}
	t.Logf("exiting release on probation: upgrade exit %d, %s; %d requests failed (at most %d in flight)", rep.ExitCode, rep.Code, lost, nWorkers)
	for _, f := range load.Snapshot().Failures {
		if f.At.After(crashAt) {
			t.Logf("  failed: %s %s pid=%d +%v: %s", f.Kind, f.Phase, f.PID, f.At.Sub(crashAt).Round(time.Millisecond), f.Err)
		}
	}
	if lost > int64(nWorkers) {
		t.Errorf("%d requests failed around the exiting release: more than the %d that can be in flight", lost, nWorkers)
	}

	// 4. baton upgrade --binary: checked, staged, the installed .exe
	// switched; then baton releases lists both, and baton rollback puts
	// the previous release back on disk as well.
	install(t, bins["hello-v1"], s.exe) // what serves is installed again (the supervisor runs copies: not locked)
	newExe := filepath.Join(t.TempDir(), "new.exe")
	install(t, bins["hello-v2"], newExe)
	f0 = failed()
	rep = s.upgrade(ctx, "--binary", winPath(newExe))
	if rep.ExitCode != 0 || rep.Result == nil {
		t.Fatalf("upgrade --binary: exit %d %s: %s", rep.ExitCode, rep.Code, rep.Error)
	}
	gens[rep.Result.Generation] = rep.Result.PID
	s.waitServes(ctx, load, rep.Result.PID, "v2")
	if got := fileSHA256(t, s.exe); got != sums["hello-v2"] {
		t.Errorf("after upgrade --binary the installed exe has sha256 %s, want %s (hello-v2)", got, sums["hello-v2"])
	}
	// The supervisor runs copies: the installed exe was not in use, so
	// nothing had to be renamed aside.
	aside, _ := filepath.Glob(s.exe + ".old-*")
	rels := s.releases(ctx)
	var v1Rel, v2Rel *releaseInfo
	for i, r := range rels.Releases {
		switch r.SHA256 {
		case sums["hello-v1"]:
			v1Rel = &rels.Releases[i]
		case sums["hello-v2"]:
			v2Rel = &rels.Releases[i]
		}
	}
	switch {
	case v1Rel == nil || v2Rel == nil:
		t.Errorf("baton releases lists %d releases %+v: want v1 (adopted) and v2", len(rels.Releases), rels.Releases)
	case !v2Rel.Installed || !v2Rel.Running || !v1Rel.Previous:
		t.Errorf("baton releases: v2 %+v, v1 %+v: want v2 installed and running, v1 previous", *v2Rel, *v1Rel)
	default:
		t.Logf("upgrade --binary: exit 0 after %v, generation %d pid %d serves v2; releases: %s (installed, running), %s (previous); %d copies renamed aside",
			rep.Took.Round(time.Millisecond), rep.Result.Generation, rep.Result.PID, v2Rel.ID, v1Rel.ID, len(aside))
	}
	back = s.rollback(ctx)
	gens[back.Generation] = back.PID
	s.waitServes(ctx, load, back.PID, "v1")
	installedNow := fileSHA256(t, s.exe)
	if installedNow != sums["hello-v1"] {
		t.Errorf("after baton rollback of a managed binary the installed exe has sha256 %s, want %s (hello-v1)", installedNow, sums["hello-v1"])
	}
	if n := failed() - f0; n != 0 {
		t.Errorf("%d requests failed around upgrade --binary and its rollback", n)
	}
	t.Logf("baton rollback after upgrade --binary: generation %d pid %d serves v1, installed exe is v1 again: %v", back.Generation, back.PID, installedNow == sums["hello-v1"])

	// 5. Status at the end: same supervisor, every live generation hashed.
	st = s.mustStatus(ctx)
	if st.Supervisor.PID != supPID || st.PID != back.PID || st.Generation != back.Generation {
		t.Errorf("final status: supervisor %d serving pid %d generation %d, want supervisor %d serving pid %d generation %d",
			st.Supervisor.PID, st.PID, st.Generation, supPID, back.PID, back.Generation)
	}
	if st.OpenHandles <= 0 {
		t.Errorf("final status: open_handles %d, want > 0", st.OpenHandles)
	}
	s.waitGenSHA256(ctx, st.Generation)
	for _, g := range s.mustStatus(ctx).Supervisor.Generations {
		// A draining one may be gone by now: those listed say theirs.
		if g.SHA256 == "" {
			t.Errorf("final status: generation %d pid %d %s has no sha256", g.Generation, g.PID, g.State)
		}
		t.Logf("final status: generation %d pid %d %s, sha256 %.16s…", g.Generation, g.PID, g.State, g.SHA256)
	}
	// The release that exited on probation was rolled back, not also
	// handled as a crash of the serving generation.
	if b, _ := os.ReadFile(filepath.Join(s.dir, "baton-run.log")); strings.Contains(string(b), "the serving generation died") {
		t.Errorf("the supervisor handled the exit on probation as a crash too (its log says \"the serving generation died\")")
	}
	t.Logf("final status: %d open handles in generation %d; supervisor restarts %d", st.OpenHandles, st.Generation, st.Supervisor.Restarts)

	final := load.Stop()
	t.Logf("load under Wine, whole run:\n%s", final)
	for kind, ks := range final.ByKind {
		if ks.OK == 0 {
			t.Errorf("%s: no request answered", kind)
		}
	}

	// 6. Logs: baton logs and the --log-file have the app's lines tagged
	// [gen G pid P]; the file rotated at its size.
	code, out, errOut, err := winCmd(ctx, bins["baton"], "logs", "--name", name, "--lines", "2000")
	if err != nil || code != 0 {
		t.Fatalf("baton logs: exit %d %v: %s", code, err, errOut)
	}
	logLines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	tagged := tagsIn(logLines)
	for g, pid := range gens {
		if !tagged[fmt.Sprintf("[gen %d pid %d]", g, pid)] {
			t.Errorf("baton logs has no line tagged [gen %d pid %d]", g, pid)
		}
	}
	if n := untagged(logLines); n > 0 {
		t.Errorf("baton logs: %d lines without a [gen G pid P] tag", n)
	}
	var fileLines []string
	rotated := 0
	for i := 0; i <= 3; i++ {
		p := logFile
		if i > 0 {
			p = fmt.Sprintf("%s.%d", logFile, i)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if i > 0 {
			rotated++
		}
		if len(b) > logMaxSize && strings.Count(string(b), "\n") > 1 {
			t.Errorf("%s: %d bytes, more than --log-max-size %d", filepath.Base(p), len(b), logMaxSize)
		}
		fileLines = append(fileLines, strings.Split(strings.TrimRight(string(b), "\n"), "\n")...)
	}
	if rotated == 0 {
		t.Errorf("the log file never rotated (--log-max-size %d)", logMaxSize)
	}
	if n := untagged(fileLines); n > 0 || len(fileLines) == 0 {
		t.Errorf("--log-file: %d lines, %d without a [gen G pid P] tag", len(fileLines), n)
	}
	// The newest lines are in both.
	inFile := map[string]bool{}
	for _, l := range fileLines {
		inFile[l] = true
	}
	last := logLines[len(logLines)-1]
	if !inFile[last] {
		t.Errorf("the last line of baton logs is not in the log file: %q", last)
	}
	finalTag := fmt.Sprintf("[gen %d pid %d]", back.Generation, back.PID)
	if !tagsIn(fileLines)[finalTag] {
		t.Errorf("the log file has no line tagged %s", finalTag)
	}
	t.Logf("logs: baton logs %d lines from %d generations; log file %s + %d rotated (max %d bytes): %d lines",
		len(logLines), len(tagged), filepath.Base(logFile), rotated, logMaxSize, len(fileLines))
}

var tagRE = regexp.MustCompile(`^\[gen \d+ pid (\d+|\?)\] `)

func tagsIn(lines []string) map[string]bool {
	out := map[string]bool{}
	for _, l := range lines {
		if m := tagRE.FindString(l); m != "" {
			out[strings.TrimSpace(m)] = true
		}
	}
	return out
}

func untagged(lines []string) int {
	n := 0
	for _, l := range lines {
		if !tagRE.MatchString(l) {
			n++
		}
	}
	return n
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// waitGenSHA256 waits until status lists generation n with its sha256
// (hashed once it is ready).
func (s *supervised) waitGenSHA256(ctx context.Context, n int) contract.GenInfo {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := s.mustStatus(ctx)
		for _, g := range st.Supervisor.Generations {
			if g.Generation == n && g.SHA256 != "" {
				return g
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("status lists no sha256 for generation %d after 20s: %+v", n, st.Supervisor.Generations)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitServes waits until the load got a response from pid, and checks its
// version.
func (s *supervised) waitServes(ctx context.Context, load *loadgen.Load, pid int, version string) {
	s.t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := load.WaitPID(wctx, pid); err != nil {
		s.t.Fatalf("no response from pid %d: %v", pid, err)
	}
	if v := load.Snapshot().PIDs[pid].Version; v != version {
		s.t.Errorf("pid %d answers version %q, want %q", pid, v, version)
	}
}

// rollback runs baton rollback --json, which must succeed.
func (s *supervised) rollback(ctx context.Context) contract.UpgradeResult {
	s.t.Helper()
	code, out, errOut, err := winCmd(ctx, bins["baton"], "rollback", "--name", s.name, "--json")
	if err != nil {
		s.t.Fatal(err)
	}
	var resp contract.Response
	var r contract.UpgradeResult
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		s.t.Fatalf("baton rollback (exit %d) printed no JSON: %v\n%s\n%s", code, err, out, errOut)
	}
	if code != 0 || !resp.OK {
		s.t.Fatalf("baton rollback: exit %d %s: %s", code, resp.Code, resp.Error)
	}
	if err := resp.Decode(&r); err != nil || r.PID <= 0 {
		s.t.Fatalf("baton rollback: result %s: %v", resp.Result, err)
	}
	return r
}

var failedGenRE = regexp.MustCompile(`generation (\d+) \(pid (\d+)\) failed its probation`)

// checkRolledBack checks that an upgrade was rolled back on probation
// (exit 1, rolled_back) and that v1 serves again from a new generation;
// it returns the serving pid.
func (s *supervised) checkRolledBack(ctx context.Context, load *loadgen.Load, rep upgradeReport, what string, prevPID int, gens map[int]int) int {
	s.t.Helper()
	if rep.ExitCode != exitFailed || rep.Code != contract.CodeRolledBack {
		s.t.Fatalf("%s release on probation: upgrade exit %d code %q: %s (want exit %d, %s)", what, rep.ExitCode, rep.Code, rep.Error, exitFailed, contract.CodeRolledBack)
	}
	if m := failedGenRE.FindStringSubmatch(rep.Error); m != nil {
		g, _ := strconv.Atoi(m[1])
		pid, _ := strconv.Atoi(m[2])
		gens[g] = pid
		if ps, ok := load.Snapshot().PIDs[pid]; ok {
			s.t.Logf("%s release: generation %d pid %d served %d responses (%s) before its rollback", what, g, pid, ps.Responses, ps.Version)
		}
	} else {
		s.t.Errorf("%s release: the error does not name the failed generation: %s", what, rep.Error)
	}
	st := s.mustStatus(ctx)
	if st.PID <= 0 || st.PID == prevPID || st.Phase != "serving" {
		s.t.Fatalf("after the %s release's rollback: serving pid %d %s (before: %d)", what, st.PID, st.Phase, prevPID)
	}
	gens[st.Generation] = st.PID
	s.waitServes(ctx, load, st.PID, "v1")
	s.t.Logf("%s release rolled back: %s", what, firstLine(rep.Error))
	if strings.Contains(rep.Error, "before it was ready") {
		s.t.Errorf("%s release: it was ready, yet the error says %q", what, firstLine(rep.Error))
	}
	return st.PID
}

func firstLine(s string) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	if sc.Scan() {
		return sc.Text()
	}
	return s
}

// releaseInfo is one entry of baton releases --json.
type releaseInfo struct {
	ID        string `json:"id"`
	SHA256    string `json:"sha256"`
	Installed bool   `json:"installed"`
	Previous  bool   `json:"previous"`
	Running   bool   `json:"running"`
}

type releasesList struct {
	Installed string        `json:"installed"`
	Releases  []releaseInfo `json:"releases"`
}

func (s *supervised) releases(ctx context.Context) releasesList {
	s.t.Helper()
	code, out, errOut, err := winCmd(ctx, bins["baton"], "releases", "--name", s.name, "--json")
	if err != nil || code != 0 {
		s.t.Fatalf("baton releases: exit %d %v: %s", code, err, errOut)
	}
	var l releasesList
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		s.t.Fatalf("baton releases printed no JSON: %v\n%s", err, out)
	}
	return l
}
