// Package e2e runs real processes under load: examples/hello upgraded
// through the real `baton` CLI while a loader that never retries counts
// every failed request.
package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/proctest"
)

var (
	bins    map[string]string
	tracker *proctest.Tracker
	workDir string
)

func TestMain(m *testing.M) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" && runtime.GOOS != "freebsd" {
		fmt.Println("e2e: the Unix end-to-end tests run on Linux, macOS and FreeBSD")
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
	// A short directory: unix socket paths are limited to ~104 bytes.
	workDir, err = os.MkdirTemp("", "be2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(workDir)
	os.Setenv("BATON_RUNTIME_DIR", filepath.Join(workDir, "run"))
	// The service binaries and the CLI are race-enabled: a race stops the
	// process at once (the test fails loudly) and exits do not linger for
	// the detector's default 1 s.
	os.Setenv("GORACE", "halt_on_error=1 atexit_sleep_ms=0")
	bins, err = proctest.Build(root, workDir, map[string]string{
		"hello":        "./examples/hello",
		"hello-v2":     "./examples/hello",
		"hello-broken": "./examples/hello",
		"baton":        "./cmd/baton",
		"plain":        "./examples/plain",
		"hello-hang":   "./examples/hello",
		"plain-crashy": "./examples/plain",
		"plain-sick":   "./examples/plain",
		"badapp-exit":  "./test/e2e/testdata/badapp",
		"badapp-hang":  "./test/e2e/testdata/badapp",
	}, map[string][]string{
		"baton":        {"-race"}, // the supervisor is concurrent code too
		"hello":        {"-race", "-ldflags", "-X main.buildVersion=v1"},
		"hello-v2":     {"-race", "-ldflags", "-X main.buildVersion=v2"},
		"hello-broken": {"-ldflags", "-X main.brokenRelease=database_url_missing"},
		"hello-hang":   {"-ldflags", "-X main.hangBeforeReady=1"},
		"plain-crashy": {"-ldflags", "-X main.buildVersion=crashy -X main.buildCrashAfter=1s"},
		"plain-sick":   {"-ldflags", "-X main.buildVersion=sick -X main.buildUnhealthyAfter=1s"},
		"badapp-exit":  {"-ldflags", "-X main.mode=exit"},
		"badapp-hang":  {"-ldflags", "-X main.mode=hang"},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tracker = proctest.NewTracker()
	defer tracker.Close()
	code := m.Run()
	// Whatever a failed test left running is killed, not leaked.
	for _, pid := range tracker.Live() {
		if p, err := os.FindProcess(pid); err == nil {
			p.Kill()
		}
	}
	return code
}

// freeAddr returns a loopback TCP address that was free a moment ago.
func freeAddr(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().String()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// installCopy copies the hello binary to a per-test path, the "installed"
// binary that upgrades re-read from disk and that tests replace.
func installCopy(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	// rename: the running generation's text is never written to.
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// startHello starts a first generation of hello from an installed copy.
func startHello(t *testing.T, name string, args ...string) (*proctest.Service, string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "hello")
	installCopy(t, bins["hello"], bin)
	logf, err := os.Create(filepath.Join(dir, "hello.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("service log (tail):\n%s", b)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := proctest.Start(ctx, tracker, bins["baton"], name, os.Environ(), logf, bin, append([]string{"-name", name}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopService(t, svc) })
	return svc, bin
}

// stopService stops the service with `baton stop` (SIGINT to the serving
// generation if that fails) and waits for every process to be gone.
func stopService(t *testing.T, svc *proctest.Service) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stop := exec.CommandContext(ctx, bins["baton"], "stop", "--name", svc.Name)
	if out, err := stop.CombinedOutput(); err != nil && !strings.Contains(string(out), "no baton service") {
		t.Logf("baton stop: %v: %s", err, out)
		if st, err := svc.Status(ctx); err == nil {
			if p, err := os.FindProcess(st.PID); err == nil {
				p.Signal(os.Interrupt)
			}
		}
	}
	for _, pid := range tracker.Live() {
		if _, err := tracker.WaitExit(ctx, pid); err != nil {
			t.Errorf("generation left running after stop: %v", err)
			if p, err := os.FindProcess(pid); err == nil {
				p.Kill()
			}
		}
	}
}
