//go:build unix

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/baton-go/baton/internal/proctest"
	"github.com/baton-go/baton/internal/release"
)

// Candidates that must be refused, built once on first use: hello for
// another GOARCH and for Windows, a truncated hello, and a program of
// another main module.
var (
	stagingOnce sync.Once
	stagingErr  error
	staged      = map[string]string{}
)

func stagingBins(t *testing.T) map[string]string {
	t.Helper()
	stagingOnce.Do(func() {
		root, err := proctest.ModuleRoot()
		if err != nil {
			stagingErr = err
			return
		}
		arch := "arm64"
		if runtime.GOARCH == "arm64" {
			arch = "amd64"
		}
		build := func(name, dir string, env []string, pkg string) {
			if stagingErr != nil {
				return
			}
			out := filepath.Join(workDir, name)
			cmd := exec.Command("go", "build", "-o", out, pkg)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), env...)
			if b, err := cmd.CombinedOutput(); err != nil {
				stagingErr = errors.New("go build " + name + ": " + err.Error() + "\n" + string(b))
			}
			staged[name] = out
		}
		build("hello-otherarch", root, []string{"GOARCH=" + arch, "CGO_ENABLED=0"}, "./examples/hello")
		build("hello.exe", root, []string{"GOOS=windows", "CGO_ENABLED=0"}, "./examples/hello")
		other := filepath.Join(workDir, "othermod")
		os.MkdirAll(other, 0o755)
		os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/othermod\n\ngo 1.25\n"), 0o644)
		os.WriteFile(filepath.Join(other, "main.go"), []byte("package main\n\nfunc main() { println(\"another program\") }\n"), 0o644)
		build("othermod-app", other, []string{"GOWORK=off", "GOFLAGS=-mod=mod"}, ".")
		if stagingErr != nil {
			return
		}
		b, err := os.ReadFile(bins["hello-v2"])
		if err != nil {
			stagingErr = err
			return
		}
		staged["hello-truncated"] = filepath.Join(workDir, "hello-truncated")
		stagingErr = os.WriteFile(staged["hello-truncated"], b[:len(b)*2/3], 0o755)
	})
	if stagingErr != nil {
		t.Fatal(stagingErr)
	}
	return staged
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	s, err := release.FileSHA256(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// batonRun runs the baton CLI and returns its exit code, stdout and stderr.
func batonRun(ctx context.Context, t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bins["baton"], args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), o.String(), e.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, o.String(), e.String()
}

// stageUpgradeReport is the part of `baton upgrade --binary --json` the
// tests read.
type stageUpgradeReport struct {
	OK     bool   `json:"ok"`
	Code   string `json:"code"`
	Error  string `json:"error"`
	Result *struct {
		PID int `json:"pid"`
	} `json:"result"`
	Release      *release.Release `json:"release"`
	DiskRollback *release.Release `json:"disk_rolled_back_to"`
	Checks       *release.Report  `json:"checks"`
}

func upgradeBinary(ctx context.Context, t *testing.T, name, bin string, extra ...string) (int, stageUpgradeReport, string) {
	t.Helper()
	args := append([]string{"upgrade", "--name", name, "--json", "--binary", bin}, extra...)
	code, out, errOut := batonRun(ctx, t, args...)
	var rep stageUpgradeReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("baton upgrade --binary printed no JSON report (exit %d): %v\n%s%s", code, err, out, errOut)
	}
	return code, rep, errOut
}

// TestStagingRefusals: each bad candidate is refused before anything is
// switched, while the service serves under load: a clear message and
// exit code, the installed binary unchanged, the same generation serving,
// no failed request.
func TestStagingRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end load test")
	}
	cand := stagingBins(t)
	addr := freeAddr(t, "tcp")
	svc, bin := startHello(t, "stage", "-addr", addr, "-idle-grace", "500ms")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	servingPID := st.PID
	installedSHA := fileSHA(t, bin)
	load := startMixedLoad(t, ctx, addr, "", "")
	waitResponses(t, load.tcp, servingPID, 100)

	keys := t.TempDir()
	pub, priv, err := minisign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	pubText, _ := pub.MarshalText()
	pubFile := filepath.Join(keys, "release.pub")
	os.WriteFile(pubFile, pubText, 0o644)
	// A signature made for hello v1, shipped beside v2.
	v1, _ := os.ReadFile(bins["hello"])
	v2 := filepath.Join(keys, "hello-v2")
	installCopy(t, bins["hello-v2"], v2)
	os.WriteFile(v2+".minisig", minisign.Sign(priv, v1), 0o644)

	unchanged := func(t *testing.T) {
		t.Helper()
		if got := fileSHA(t, bin); got != installedSHA {
			t.Fatalf("the installed binary changed: sha256 %s, was %s", got, installedSHA)
		}
		st, err := svc.Status(ctx)
		if err != nil || st.PID != servingPID || st.Phase != "serving" {
			t.Fatalf("after a refusal: %v pid %d %s, want pid %d serving", err, st.PID, st.Phase, servingPID)
		}
		waitResponses(t, load.tcp, servingPID, 1) // it still answers
	}

	for _, tc := range []struct {
		name     string
		bin      string
		args     []string
		code     string
		contains []string
	}{
		{"truncated ELF", cand["hello-truncated"], nil, "not_executable", []string{"truncated ELF file"}},
		{"Windows PE", cand["hello.exe"], nil, "not_executable", []string{"Windows PE", "for another system than " + runtime.GOOS}},
		{"other GOARCH", cand["hello-otherarch"], nil, "not_executable", []string{"for another CPU than " + runtime.GOARCH}},
		{"wrong sha256", bins["hello-v2"], []string{"--sha256", strings.Repeat("ab", 32)}, "checksum", []string{"checksum mismatch", "expects " + strings.Repeat("ab", 32)}},
		{"bad signature", v2, []string{"--pubkey", pubFile}, "signature", []string{"signature does not verify", "does not match the file"}},
		{"smoke exits 1", bins["hello-v2"], []string{"--smoke", "{bin} -name smoke1 -addr 256.0.0.1:1"}, "smoke", []string{"exited with exit code 1", "no such host"}},
		{"smoke hangs", bins["hello-v2"], []string{"--smoke", "{bin} -name smoke2 -addr 127.0.0.1:0", "--smoke-timeout", "1s"}, "smoke", []string{"did not finish within 1s and was killed"}},
		{"another module", cand["othermod-app"], nil, "module", []string{"example.com/othermod", "github.com/baton-go/baton", "--force"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, rep, _ := upgradeBinary(ctx, t, "stage", tc.bin, tc.args...)
			if code != exitFailed || rep.OK || rep.Code != tc.code {
				t.Fatalf("exit %d ok=%v code=%q, want exit 1 and code %q: %s", code, rep.OK, rep.Code, tc.code, rep.Error)
			}
			for _, s := range tc.contains {
				if !strings.Contains(rep.Error, s) {
					t.Errorf("error %q does not say %q", rep.Error, s)
				}
			}
			if rep.Release != nil || rep.Checks == nil {
				t.Errorf("a refused binary was staged (%+v) or no check report", rep.Release)
			}
			// The text form says the same, on stderr, and that nothing changed.
			args := append([]string{"upgrade", "--name", "stage", "--binary", tc.bin}, tc.args...)
			code, _, errOut := batonRun(ctx, t, args...)
			if code != exitFailed || !strings.Contains(errOut, "refused, nothing changed") || !strings.Contains(errOut, tc.contains[0]) {
				t.Errorf("text output: exit %d\n%s", code, errOut)
			}
			unchanged(t)
		})
	}

	t.Run("file still being written", func(t *testing.T) {
		if runtime.GOOS != "linux" {
			t.Skip("naming the holder needs /proc")
		}
		f := filepath.Join(t.TempDir(), "hello-v2")
		installCopy(t, bins["hello-v2"], f)
		ready := f + ".ready"
		w := exec.Command("sh", "-c", `exec 3>>"$1"; : >"$2"; exec sleep 60`, "sh", f, ready)
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { w.Process.Kill(); w.Wait() }()
		waitFor(t, 10*time.Second, "the writer opening the file", func() bool {
			_, err := os.Stat(ready)
			return err == nil
		})
		code, _, errOut := batonRun(ctx, t, "upgrade", "--name", "stage", "--binary", f)
		want := "pid " + strconv.Itoa(w.Process.Pid) + " (sleep) has it open for writing"
		if code != exitBusy || !strings.Contains(errOut, want) {
			t.Fatalf("exit %d, want 4 and a message naming %q:\n%s", code, want, errOut)
		}
		t.Logf("message: %s", strings.TrimSpace(errOut))
		unchanged(t)
	})
	load.stopAndCheck(t)
}

// TestStagingRollbackOnFailedUpgrade: upgrade --binary installs and
// starts a good release; a release that fails to start is rolled back on
// disk (the previous release installed again) while the previous
// generation keeps serving; install + plain upgrade work afterwards. No
// request fails throughout.
func TestStagingRollbackOnFailedUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end load test")
	}
	addr := freeAddr(t, "tcp")
	svc, bin := startHello(t, "stroll", "-addr", addr, "-idle-grace", "500ms")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st0, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	load := startMixedLoad(t, ctx, addr, "", "")
	waitResponses(t, load.tcp, st0.PID, 100)
	v1, v2 := fileSHA(t, bins["hello"]), fileSHA(t, bins["hello-v2"])

	// 1. A good release, checked (smoke run included), staged, switched, started.
	code, rep, errOut := upgradeBinary(ctx, t, "stroll", bins["hello-v2"], "--smoke", "{bin} -h")
	if code != 0 || !rep.OK || rep.Result == nil || rep.Release == nil || rep.Release.SHA256 != v2 {
		t.Fatalf("upgrade to v2: exit %d %+v %s", code, rep, errOut)
	}
	svc.Tracker.Track(rep.Result.PID)
	if _, err := load.tcp.WaitPID(ctx, rep.Result.PID); err != nil {
		t.Fatal(err)
	}
	if got := load.tcp.Snapshot().PIDs[rep.Result.PID].Version; got != "v2" {
		t.Fatalf("the new generation answers version %q, want v2", got)
	}
	if fileSHA(t, bin) != v2 {
		t.Fatal("v2 is not installed")
	}
	v2PID := rep.Result.PID

	// 2. A release that fails before it is ready: the disk goes back to v2.
	code, rep, errOut = upgradeBinary(ctx, t, "stroll", bins["hello-broken"])
	if code != exitFailed || rep.OK || rep.Code != "child_exited" {
		t.Fatalf("upgrade to a broken release: exit %d code %q, want 1 and child_exited: %s %s", code, rep.Code, rep.Error, errOut)
	}
	if rep.DiskRollback == nil || rep.DiskRollback.SHA256 != v2 {
		t.Fatalf("disk rollback not reported: %+v", rep.DiskRollback)
	}
	if got := fileSHA(t, bin); got != v2 {
		t.Fatalf("after the failed upgrade the installed binary is %s, want v2 %s", got, v2)
	}
	st, err := svc.Status(ctx)
	if err != nil || st.PID != v2PID {
		t.Fatalf("after the failed upgrade: %v, pid %d serving, want %d", err, st.PID, v2PID)
	}
	// The text form says so.
	code, _, errOut = batonRun(ctx, t, "upgrade", "--name", "stroll", "--binary", bins["hello-broken"])
	if code != exitFailed || !strings.Contains(errOut, "is release "+rep.DiskRollback.ID+" again") {
		t.Errorf("text output: exit %d %s", code, errOut)
	}

	// 3. releases: v2 installed and running; the broken one previous.
	code, out, _ := batonRun(ctx, t, "releases", "--name", "stroll", "--json")
	var rl struct {
		Releases []struct {
			release.Release
			Running bool `json:"running"`
		} `json:"releases"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rl) != nil {
		t.Fatalf("releases: exit %d %s", code, out)
	}
	seen := 0
	for _, r := range rl.Releases {
		if r.SHA256 == v2 {
			seen++
			if !r.Installed || !r.Running {
				t.Errorf("v2: installed=%v running=%v, want both", r.Installed, r.Running)
			}
		}
		if r.SHA256 == v1 {
			seen++ // adopted at the first install
		}
	}
	if seen != 2 {
		t.Errorf("releases lists %d of v1 and v2:\n%s", seen, out)
	}

	// 4. install (no restart), then a plain upgrade starts it.
	code, out, errOut = batonRun(ctx, t, "install", "--name", "stroll", bins["hello"])
	if code != 0 || fileSHA(t, bin) != v1 {
		t.Fatalf("install v1: exit %d %s %s", code, out, errOut)
	}
	if st, _ := svc.Status(ctx); st.PID != v2PID {
		t.Fatal("install restarted the service")
	}
	urep, err := svc.Upgrade(ctx)
	if err != nil || !urep.OK {
		t.Fatalf("upgrade after install: %v %+v", err, urep)
	}
	if _, err := load.tcp.WaitPID(ctx, urep.Result.PID); err != nil {
		t.Fatal(err)
	}
	if got := load.tcp.Snapshot().PIDs[urep.Result.PID].Version; got != "v1" {
		t.Fatalf("after install + upgrade the service answers %q, want v1", got)
	}
	waitResponses(t, load.tcp, urep.Result.PID, 100)
	load.stopAndCheck(t)
}

// TestStagingCrashSafety kills `baton install` with SIGKILL at random
// moments: the installed path always holds exactly the old or the new
// binary, executable, and the next install works (the lock dies with its
// holder, leftovers are ignored).
func TestStagingCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	installed := filepath.Join(dir, "hello")
	installCopy(t, bins["hello"], installed)
	shas := map[string]string{fileSHA(t, bins["hello"]): "v1", fileSHA(t, bins["hello-v2"]): "v2"}
	cands := []string{bins["hello-v2"], bins["hello"]}

	// How long a whole install of a staged release takes (both are staged
	// by the first two): kills land across all of it, most of them in its
	// second part, where the switch is.
	var full time.Duration
	for i, c := range []string{bins["hello-v2"], bins["hello"], bins["hello-v2"]} {
		start := time.Now()
		if code, out, errOut := batonRun(ctx, t, "install", "--path", installed, c); code != 0 {
			t.Fatalf("install: exit %d %s %s", code, out, errOut)
		}
		if d := time.Since(start); i > 0 && d > full {
			full = d
		}
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	outcomes := map[string]int{}
	const rounds = 40
	for i := 0; i < rounds; i++ {
		before := shas[fileSHA(t, installed)]
		cmd := exec.Command(bins["baton"], "install", "--path", installed, cands[i%2])
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pace(full/4 + time.Duration(rng.Int63n(int64(full)))) // a random moment of the install
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		killed := err != nil
		fi, serr := os.Stat(installed)
		if serr != nil {
			t.Fatalf("round %d: the installed path is gone: %v", i, serr)
		}
		got, ok := shas[fileSHA(t, installed)]
		if !ok {
			t.Fatalf("round %d: the installed path holds neither the old nor the new binary (%d bytes)", i, fi.Size())
		}
		if fi.Mode().Perm()&0o111 == 0 {
			t.Fatalf("round %d: the installed binary is not executable (%v)", i, fi.Mode())
		}
		switch {
		case !killed:
			outcomes["finished"]++
		case got == before:
			outcomes["killed, old kept"]++
		default:
			outcomes["killed, new installed"]++
		}
	}
	t.Logf("%d kills of baton install within %v: %v", rounds, full.Round(time.Millisecond), outcomes)
	// Afterwards: an install works and the store is consistent.
	if code, out, errOut := batonRun(ctx, t, "install", "--path", installed, bins["hello"]); code != 0 || shas[fileSHA(t, installed)] != "v1" {
		t.Fatalf("install after the kills: exit %d %s %s", code, out, errOut)
	}
	code, out, _ := batonRun(ctx, t, "releases", "--path", installed, "--json")
	if code != 0 || !strings.Contains(out, `"installed": true`) {
		t.Fatalf("releases after the kills: exit %d %s", code, out)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".hello.new-*")); len(leftovers) > rounds {
		t.Errorf("%d temporary files left beside the installed binary", len(leftovers))
	}
}
