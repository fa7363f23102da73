//go:build linux

// Package wine runs the Windows build of baton under Wine, driven from the
// Linux side: examples/hello.exe is upgraded through baton.exe while a
// native loader (Wine uses host sockets) counts every failed request.
// It runs when BATON_WINE_LANE=1 (scripts/wine/lane.sh sets it after
// preparing Wine); elsewhere it is skipped, saying why.
package wine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton"
	"github.com/baton-go/baton/internal/proctest"
)

var (
	bins    map[string]string
	workDir string
	wineEnv []string
)

func TestMain(m *testing.M) {
	if os.Getenv("BATON_WINE_LANE") != "1" {
		fmt.Println("wine lane: skipped (run `make test`, which prepares Wine and sets BATON_WINE_LANE=1)")
		os.Exit(0)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := proctest.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	workDir, err = os.MkdirTemp("", "bwine")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(workDir)
	os.Setenv("GOOS", "windows")
	os.Setenv("GOARCH", "amd64")
	bins, err = proctest.Build(root, workDir, map[string]string{
		"hello-v1": "./examples/hello", "hello-v2": "./examples/hello", "baton": "./cmd/baton",
		"badapp-exit": "./test/e2e/testdata/badapp", "badapp-hang": "./test/e2e/testdata/badapp",
		"hello-sick": "./examples/hello", "hello-crash": "./examples/hello",
	}, map[string][]string{
		"hello-v1": {"-ldflags", "-X main.buildVersion=v1"},
		"hello-v2": {"-ldflags", "-X main.buildVersion=v2"},
		// Releases that fail a probation: unhealthy, or gone, soon after Ready.
		"hello-sick":  {"-ldflags", "-X main.buildVersion=v3-sick -X main.buildUnhealthyAfter=500ms"},
		"hello-crash": {"-ldflags", "-X main.buildVersion=v3-crash -X main.buildExitAfter=500ms"},
		"badapp-exit": {"-ldflags", "-X main.mode=exit"},
		"badapp-hang": {"-ldflags", "-X main.mode=hang"},
	})
	os.Unsetenv("GOOS")
	os.Unsetenv("GOARCH")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	prefix := os.Getenv("BATON_WINEPREFIX")
	if prefix == "" {
		home, _ := os.UserHomeDir()
		prefix = filepath.Join(home, ".cache", "baton-wine")
	}
	wineEnv = append(os.Environ(), "WINEPREFIX="+prefix, "WINEDEBUG=-all", "WINEDLLOVERRIDES=mscoree,mshtml=", "DISPLAY=")
	// A persistent wineserver for the whole run, its helpers detached from
	// our output.
	for _, args := range [][]string{{"wineserver", "-p"}, {"wine", "cmd", "/c", "exit"}} {
		c := exec.Command(args[0], args[1:]...)
		c.Env = wineEnv
		if err := c.Run(); err != nil && args[0] == "wine" {
			fmt.Fprintln(os.Stderr, "wine lane: wine does not start:", err)
			return 1
		}
	}
	code := m.Run()
	k := exec.Command("wineserver", "-k")
	k.Env = wineEnv
	k.Run()
	return code
}

// winCmd runs a Windows program under Wine and returns its exit code.
func winCmd(ctx context.Context, exe string, args ...string) (int, string, string, error) {
	cmd := exec.CommandContext(ctx, "wine", append([]string{exe}, args...)...)
	cmd.Env = wineEnv
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), o.String(), e.String(), nil
	}
	return 0, o.String(), e.String(), err
}

type service struct {
	t    *testing.T
	name string
	exe  string // the installed hello.exe
	cmd  *exec.Cmd
	log  *os.File
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func freeUDPPort(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

func install(t *testing.T, src, dst string) {
	t.Helper()
	if err := proctest.InstallCopy(src, dst); err != nil {
		t.Fatal(err)
	}
}

// replaceRunning installs src at dst while dst may be running: a running
// .exe cannot be overwritten on Windows (Wine enforces the same lock) but
// it can be renamed aside; the library removes stale copies later.
func replaceRunning(t *testing.T, src, dst string, n int) {
	t.Helper()
	if _, err := os.Stat(dst); err == nil {
		if err := os.Rename(dst, fmt.Sprintf("%s.old-%d", dst, n)); err != nil {
			t.Fatal(err)
		}
	}
	install(t, src, dst)
}

func startService(t *testing.T, name string, args ...string) *service {
	t.Helper()
	dir := t.TempDir()
	s := &service{t: t, name: name, exe: filepath.Join(dir, "hello.exe")}
	install(t, bins["hello-v1"], s.exe)
	var err error
	if s.log, err = os.Create(filepath.Join(dir, "hello.log")); err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command("wine", append([]string{s.exe, "-name", name}, args...)...)
	s.cmd.Env = wineEnv
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		st, err := s.status(ctx)
		if err == nil && st.Phase == baton.PhaseServing {
			return s
		}
		if ctx.Err() != nil {
			t.Fatalf("hello.exe not serving under Wine: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *service) status(ctx context.Context) (baton.Status, error) {
	var st baton.Status
	code, out, errOut, err := winCmd(ctx, bins["baton"], "status", "--name", s.name, "--json")
	if err != nil {
		return st, err
	}
	if code != 0 {
		return st, fmt.Errorf("baton status exited %d: %s%s", code, out, errOut)
	}
	return st, json.Unmarshal([]byte(out), &st)
}

type upgradeReport struct {
	ExitCode  int
	Triggered time.Time
	OK        bool                  `json:"ok"`
	Code      string                `json:"code"`
	Error     string                `json:"error"`
	Result    *baton.UpgradeResult  `json:"result"`
	ChildExit *baton.ChildExitError `json:"child_exit"`
	Took      time.Duration         `json:"took_ns"`
}

func (s *service) upgrade(ctx context.Context, extra ...string) upgradeReport {
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

func (s *service) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	winCmd(ctx, bins["baton"], "stop", "--name", s.name)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
	}
	s.log.Close()
	if s.t.Failed() {
		b, _ := os.ReadFile(s.log.Name())
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		s.t.Logf("hello.exe log (tail):\n%s", b)
	}
}

var pidRE = regexp.MustCompile(`pid (\d+)`)

func pidIn(msg string) string {
	if m := pidRE.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	return ""
}

// winPath is how a Windows program under Wine names a host path.
func winPath(p string) string { return `Z:` + strings.ReplaceAll(p, "/", `\`) }
