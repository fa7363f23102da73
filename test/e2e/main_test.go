// Package e2e runs real processes under load: examples/hello upgraded
// through the real `baton` CLI while a loader that never retries counts
// every failed request.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
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
		"hello":         "./examples/hello",
		"hello-v2":      "./examples/hello",
		"hello-broken":  "./examples/hello",
		"hello-sick500": "./examples/hello",
		"baton":         "./cmd/baton",
		"plain":         "./examples/plain",
		"hello-hang":    "./examples/hello",
		"plain-crashy":  "./examples/plain",
		"plain-sick":    "./examples/plain",
		"badapp-exit":   "./test/e2e/testdata/badapp",
		"badapp-hang":   "./test/e2e/testdata/badapp",
	}, map[string][]string{
		"baton":         {"-race"}, // the supervisor is concurrent code too
		"hello":         {"-race", "-ldflags", "-X main.buildVersion=v1"},
		"hello-v2":      {"-race", "-ldflags", "-X main.buildVersion=v2"},
		"hello-broken":  {"-ldflags", "-X main.brokenRelease=database_url_missing"},
		"hello-sick500": {"-ldflags", "-X main.buildVersion=sick500 -X main.buildErrorEvery=2"},
		"hello-hang":    {"-ldflags", "-X main.hangBeforeReady=1"},
		"plain-crashy":  {"-ldflags", "-X main.buildVersion=crashy -X main.buildCrashAfter=1s"},
		"plain-sick":    {"-ldflags", "-X main.buildVersion=sick -X main.buildUnhealthyAfter=1s"},
		"badapp-exit":   {"-ldflags", "-X main.mode=exit"},
		"badapp-hang":   {"-ldflags", "-X main.mode=hang"},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tracker = proctest.NewTracker()
	defer tracker.Close()
	code := m.Run()
	// Whatever a failed test left running is killed, not leaked.
	signalEach(os.Kill, tracker.Live()...)
	return code
}

// signalEach sends sig to each pid, on the way out or in a clean-up where
// nothing is left to fail: errors are ignored, and a pid <= 0 is skipped,
// never signalled (kill(0) is the test's own process group, kill(-1) every
// process it may signal).
func signalEach(sig os.Signal, pids ...int) {
	for _, pid := range pids {
		if pid <= 0 {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil {
			p.Signal(sig)
		}
	}
}

// signalPID sends sig to process pid. It fails the test, before anything
// is sent, when pid is not a process id (an unset pid is 0: kill(0, sig)
// would signal the test's own process group). The error is the kill's
// (os.ErrProcessDone when the process is gone). Call it from the test's
// goroutine.
func signalPID(t testing.TB, pid int, sig os.Signal) error {
	t.Helper()
	if pid <= 0 {
		t.Fatalf("refusing to send %v to pid %d: no process id (unset?)", sig, pid)
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Signal(sig)
}

// pollEvery is how often waitFor and pollUntil look.
const pollEvery = 10 * time.Millisecond

// pollUntil checks cond every pollEvery until it holds (true) or timeout
// has passed (false; cond is checked one last time). With waitFor, it is
// where the end-to-end tests wait: always for cond, an observable event,
// never for a stretch of time. Safe in any goroutine.
func pollUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return cond()
		}
		time.Sleep(pollEvery)
	}
	return true
}

// waitFor waits until cond holds and fails the test, saying what did not
// happen, when it does not within timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !pollUntil(timeout, cond) {
		t.Fatalf("%s: not within %v", what, timeout)
	}
}

// pace sleeps d between the steps of a bounded loop (or, for fault
// injection, until a random moment): it paces, it never waits for
// something to happen (that is waitFor's).
func pace(d time.Duration) { time.Sleep(d) }

// waitResponses waits until generation pid has answered n more of load's
// requests than it had when called: the load ran on it for a while.
func waitResponses(t testing.TB, load *loadgen.Load, pid int, n int64) {
	t.Helper()
	before := load.Snapshot().PIDs[pid].Responses
	waitFor(t, 30*time.Second, fmt.Sprintf("%d more responses from pid %d (had %d)", n, pid, before), func() bool {
		return load.Snapshot().PIDs[pid].Responses >= before+n
	})
}

// heldRequest is a slow request (/sleep) in flight on a connection that a
// known generation accepted: the connection first carried a quick request
// whose answer named the pid, so the slow one is that generation's to
// finish (a generation drains it across an upgrade).
type heldRequest struct {
	PID  int // the generation that accepted the connection
	c    net.Conn
	done chan error
}

// holdRequest sends a quick request and then GET /sleep?ms=ms on one
// connection to addr, and returns once the quick one was answered.
func holdRequest(t testing.TB, addr string, ms int) *heldRequest {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(time.Duration(ms)*time.Millisecond + time.Minute))
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the request before the slow one: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	pid, err := strconv.Atoi(resp.Header.Get("X-Pid"))
	if err != nil || pid <= 0 {
		t.Fatalf("the request before the slow one: status %s, X-Pid %q", resp.Status, resp.Header.Get("X-Pid"))
	}
	h := &heldRequest{PID: pid, c: c, done: make(chan error, 1)}
	fmt.Fprintf(c, "GET /sleep?ms=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", ms)
	go func() {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			h.done <- err
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch got := resp.Header.Get("X-Pid"); {
		case resp.StatusCode != http.StatusOK:
			h.done <- fmt.Errorf("slow request: %s", resp.Status)
		case got != strconv.Itoa(pid):
			h.done <- fmt.Errorf("slow request answered by pid %s, its connection was pid %d's", got, pid)
		default:
			h.done <- nil
		}
	}()
	return h
}

// wait returns how the slow request ended: nil when pid answered it, 200.
func (h *heldRequest) wait() error { return <-h.done }

// freeAddr returns a loopback address of network that was free a moment ago.
func freeAddr(t *testing.T, network string) string {
	t.Helper()
	a, err := proctest.FreeAddr(network)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// installCopy copies the hello binary to a per-test path, the "installed"
// binary that upgrades re-read from disk and that tests replace.
func installCopy(t *testing.T, src, dst string) {
	t.Helper()
	if err := proctest.InstallCopy(src, dst); err != nil {
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
			signalEach(os.Interrupt, st.PID)
		}
	}
	for _, pid := range tracker.Live() {
		if _, err := tracker.WaitExit(ctx, pid); err != nil {
			t.Errorf("generation left running after stop: %v", err)
			signalEach(os.Kill, pid)
		}
	}
}
