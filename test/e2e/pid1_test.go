//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/testenv"
)

// The PID-1 tests run `baton run` as the first process of a new pid
// namespace (unshare --pid --fork --mount-proc), as in a container. The
// app is hello behind a shell that leaves an orphan behind at every
// generation: `(sleep 3600 &)` forks a sleep from a subshell that exits at
// once, so the sleep is reparented to the namespace's PID 1. The test
// kills the orphan from outside and watches whether PID 1 reaps it.

// orphanScript is the app's shell: one orphan per generation, then exec
// hello (same pid: LISTEN_PID stays right). The orphan's descriptors go to
// /dev/null: it must not hold the generation's output pipes open.
const orphanScript = `(sleep 3600 </dev/null >/dev/null 2>&1 &); exec "$0" "$@"`

// pid1NS is one `baton run` started as PID 1 of a new pid namespace.
type pid1NS struct {
	cmd    *exec.Cmd // unshare
	done   chan struct{}
	err    error // cmd.Wait's, once done is closed
	log    *bytes.Buffer
	init   int // host pid of the namespace's PID 1 (baton run)
	addr   string
	name   string
	nsLink string // /proc/INIT/ns/pid, the namespace's identity
}

// startPID1 starts `unshare --pid --fork --mount-proc baton run ...` with
// hello behind orphanScript, waits until it serves, and finds the host pid
// of the namespace's PID 1. env is added to the test's environment.
func startPID1(t *testing.T, name string, env ...string) *pid1NS {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "a new pid namespace (unshare --pid) needs root")
	}
	unshare := testenv.Command(t, "unshare", "util-linux")
	// The real shell, not the /bin/sh link: the supervisor keeps a hard
	// link of the app's binary per generation, and a link of a relative
	// symlink does not resolve from its runtime directory.
	sh, err := exec.LookPath("sh")
	if err != nil {
		testenv.Missing(t, "no sh: "+err.Error())
	}
	if sh, err = filepath.EvalSymlinks(sh); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hello := filepath.Join(dir, "hello")
	installCopy(t, bins["hello"], hello)
	ns := &pid1NS{addr: freeAddr(t, "tcp"), name: name, done: make(chan struct{}), log: &bytes.Buffer{}}
	ns.cmd = exec.Command(unshare, "--pid", "--fork", "--mount-proc", bins["baton"], "run", "--name", name,
		"--listen", "tcp://"+ns.addr, "--drain-timeout", "20s",
		"--", sh, "-c", orphanScript, hello, "-name", "", "-addr", ns.addr, "-idle-grace", "100ms")
	ns.cmd.Env = append(os.Environ(), env...)
	ns.cmd.Stdout, ns.cmd.Stderr = ns.log, ns.log
	if err := ns.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { ns.err = ns.cmd.Wait(); close(ns.done) }()
	t.Cleanup(func() {
		if !ns.exited() {
			// Killing PID 1 kills the whole namespace.
			signalEach(syscall.SIGKILL, ns.init)
			signalEach(syscall.SIGKILL, ns.cmd.Process.Pid)
			<-ns.done
		}
		if t.Failed() {
			t.Logf("baton run as PID 1, output:\n%s", pid1Tail(ns.log.String(), 8000))
		}
	})
	waitFor(t, 30*time.Second, "the namespace's PID 1 (the child of unshare)", func() bool {
		kids := pid1Children(ns.cmd.Process.Pid)
		if len(kids) == 1 {
			ns.init = kids[0]
		}
		return ns.init > 0 || ns.exited()
	})
	if ns.exited() {
		t.Fatalf("unshare exited at once: %v", ns.err)
	}
	ns.nsLink, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", ns.init))
	if err != nil {
		t.Fatal(err)
	}
	if self, _ := os.Readlink("/proc/self/ns/pid"); self == ns.nsLink {
		t.Fatalf("PID 1 (%d) is in the test's own pid namespace", ns.init)
	}
	waitFor(t, 30*time.Second, "the first generation answers", func() bool {
		_, err := pid1Get(ns.addr)
		return err == nil || ns.exited()
	})
	if ns.exited() {
		t.Fatalf("baton run exited: %v", ns.err)
	}
	return ns
}

func (ns *pid1NS) exited() bool {
	select {
	case <-ns.done:
		return true
	default:
		return false
	}
}

// orphan waits until a sleep other than those in seen is PID 1's child (an
// orphan of the generation's shell) and returns its host pid.
func (ns *pid1NS) orphan(t *testing.T, seen map[int]bool) int {
	t.Helper()
	pid := 0
	waitFor(t, 30*time.Second, "an orphaned sleep reparented to PID 1", func() bool {
		for _, p := range pid1Children(ns.init) {
			if st, err := pid1Stat(p); err == nil && st.comm == "sleep" && !seen[p] {
				pid = p
				return true
			}
		}
		return false
	})
	seen[pid] = true
	return pid
}

// zombies lists the namespace's processes that are zombies.
func (ns *pid1NS) zombies() []string {
	var out []string
	for _, p := range pid1AllPIDs() {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p)); err != nil || l != ns.nsLink {
			continue
		}
		if st, err := pid1Stat(p); err == nil && st.state == "Z" {
			out = append(out, fmt.Sprintf("pid %d (%s, parent %d)", p, st.comm, st.ppid))
		}
	}
	return out
}

// TestPID1ReapsOrphansForwardsSignalsAndUpgrades: baton run as PID 1 of a
// pid namespace reaps the orphans of every generation (no zombie left in
// the namespace), upgrades inside the namespace (baton upgrade entered
// into it, as kubectl exec does, and SIGHUP forwarded by PID 1), and on
// SIGTERM drains (a slow request in flight is answered) and exits 0.
func TestPID1ReapsOrphansForwardsSignalsAndUpgrades(t *testing.T) {
	nsenter := testenv.Command(t, "nsenter", "util-linux")
	ns := startPID1(t, "pid1")
	seen := map[int]bool{}

	// The first generation's orphan, killed: PID 1 must reap it.
	o1 := ns.orphan(t, seen)
	if err := signalPID(t, o1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, fmt.Sprintf("orphan %d reaped by PID 1", o1), func() bool {
		_, err := pid1Stat(o1)
		return os.IsNotExist(err)
	})

	// An upgrade from inside the namespace, to v2.
	hello := pid1Hello(t, ns)
	installCopy(t, bins["hello-v2"], hello)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, nsenter, "--target", strconv.Itoa(ns.init), "--pid", "--mount", "--",
		bins["baton"], "upgrade", "--name", ns.name, "--json").Output()
	if err != nil {
		t.Fatalf("baton upgrade inside the namespace: %v\n%s", err, out)
	}
	var rep struct {
		OK     bool `json:"ok"`
		Result struct {
			PID        int `json:"pid"`
			Generation int `json:"generation"`
		} `json:"result"`
	}
	if err := json.Unmarshal(out, &rep); err != nil || !rep.OK || rep.Result.Generation != 2 {
		t.Fatalf("baton upgrade inside the namespace: %v %s", err, out)
	}
	waitFor(t, 10*time.Second, "generation 2 (v2) answers", func() bool {
		h, err := pid1Get(ns.addr)
		return err == nil && h.Get("X-Version") == "v2" && h.Get("X-Generation") == "2"
	})
	// Its own orphan, reaped too.
	o2 := ns.orphan(t, seen)
	if err := signalPID(t, o2, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, fmt.Sprintf("orphan %d of generation 2 reaped by PID 1", o2), func() bool {
		_, err := pid1Stat(o2)
		return os.IsNotExist(err)
	})

	// SIGHUP to PID 1 from outside: forwarded to the supervisor, which
	// upgrades.
	if err := signalPID(t, ns.init, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "generation 3 answers after SIGHUP to PID 1", func() bool {
		h, err := pid1Get(ns.addr)
		return err == nil && h.Get("X-Generation") == "3"
	})
	ns.orphan(t, seen) // generation 3's, left running: PID 1's exit ends it

	// No zombie anywhere in the namespace: old generations reaped by the
	// supervisor, orphans by PID 1 (a process that has just exited may be
	// a zombie for a moment: its parent reaps it next).
	var zs []string
	if !pollUntil(10*time.Second, func() bool { zs = ns.zombies(); return len(zs) == 0 }) {
		t.Fatalf("zombies in the namespace: %v", zs)
	}

	// SIGTERM to PID 1: forwarded, the supervisor drains (the slow
	// request in flight is answered) and PID 1 exits 0.
	held := holdRequest(t, ns.addr, 1500)
	if err := signalPID(t, ns.init, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := held.wait(); err != nil {
		t.Errorf("the request in flight at SIGTERM: %v", err)
	}
	waitFor(t, 30*time.Second, "baton run (PID 1) exits after SIGTERM", ns.exited)
	if ns.err != nil {
		t.Fatalf("PID 1 after SIGTERM: %v, want exit 0", ns.err)
	}
	if !strings.Contains(ns.log.String(), "drained") {
		t.Errorf("no generation reported its drain")
	}
}

// TestPID1SIGINTDrains: SIGINT to PID 1 (Ctrl-C on `docker run -it`) is
// forwarded like SIGTERM: the supervisor drains (a slow request in flight
// is answered by the generation that took it) and PID 1 exits 0. Not
// forwarded, it would end PID 1 at once (Go's default for SIGINT), the
// kernel would kill the namespace and the request would fail.
func TestPID1SIGINTDrains(t *testing.T) {
	ns := startPID1(t, "pid1int")
	held := holdRequest(t, ns.addr, 1500)
	if err := signalPID(t, ns.init, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := held.wait(); err != nil {
		t.Errorf("the request in flight at SIGINT: %v", err)
	}
	waitFor(t, 30*time.Second, "baton run (PID 1) exits after SIGINT", ns.exited)
	if ns.err != nil {
		t.Fatalf("PID 1 after SIGINT: %v, want exit 0", ns.err)
	}
	if !strings.Contains(ns.log.String(), "drained") {
		t.Errorf("the generation did not report its drain")
	}
}

// TestPID1ExitCodeSaysWhy: PID 1 exits with 128+N when the supervisor is
// killed by signal N, and says so (its exit code is the supervisor's
// otherwise: 0 after SIGTERM, above).
func TestPID1ExitCodeSaysWhy(t *testing.T) {
	ns := startPID1(t, "pid1code")
	sup := 0
	for _, p := range pid1Children(ns.init) {
		if st, err := pid1Stat(p); err == nil && st.comm == "baton" {
			sup = p
		}
	}
	if sup == 0 {
		t.Fatalf("no supervisor among the children of PID 1 %d", ns.init)
	}
	if err := signalPID(t, sup, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "PID 1 exits after its supervisor was killed", ns.exited)
	ee, ok := ns.err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 128+int(syscall.SIGKILL) {
		t.Fatalf("PID 1 after SIGKILL of the supervisor: %v, want exit %d", ns.err, 128+int(syscall.SIGKILL))
	}
	if !strings.Contains(ns.log.String(), "the supervisor was killed by signal 9") {
		t.Errorf("PID 1 did not say why it exits")
	}
}

// TestPID1ControlWithoutInit is the control of the test above: the same
// namespace with the supervisor itself as PID 1 (baton's init skipped by
// presetting its child mark) keeps the killed orphan as a zombie. It shows
// that the zombie check sees what it claims to, and why init is needed.
func TestPID1ControlWithoutInit(t *testing.T) {
	ns := startPID1(t, "pid1ctl", "BATON_PID1_CHILD=1")
	if st, err := pid1Stat(ns.init); err != nil || st.comm != "baton" {
		t.Fatalf("PID 1: %+v %v, want baton", st, err)
	}
	o := ns.orphan(t, map[int]bool{})
	if err := signalPID(t, o, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, fmt.Sprintf("orphan %d left a zombie (nobody reaps it)", o), func() bool {
		st, err := pid1Stat(o)
		return err == nil && st.state == "Z"
	})
	if err := signalPID(t, ns.init, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "baton run (PID 1, no init) exits after SIGTERM", ns.exited)
}

// helloOf is the installed hello that ns's shell execs (its -c script's $0).
func pid1Hello(t *testing.T, ns *pid1NS) string {
	t.Helper()
	args := ns.cmd.Args
	for i, a := range args {
		if a == orphanScript && i+1 < len(args) {
			return args[i+1]
		}
	}
	t.Fatal("no hello in the command line")
	return ""
}

// get sends GET / to addr and returns the answer's headers.
func pid1Get(addr string) (http.Header, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /: %s", resp.Status)
	}
	return resp.Header, nil
}

// pid1ProcStat is what the test reads from /proc/PID/stat.
type pid1ProcStat struct {
	comm  string
	state string
	ppid  int
}

// readProcStat reads pid's command name, state and parent (host pids). Its
// error satisfies os.IsNotExist once pid is gone (reaped).
func pid1Stat(pid int) (pid1ProcStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return pid1ProcStat{}, err
	}
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return pid1ProcStat{}, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 2 {
		return pid1ProcStat{}, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return pid1ProcStat{}, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	return pid1ProcStat{comm: string(b[open+1 : end]), state: f[0], ppid: ppid}, nil
}

// allPIDs lists the processes of /proc (the host's).
func pid1AllPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if p, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// childrenOf lists the children of parent (host pids).
func pid1Children(parent int) []int {
	var out []int
	for _, p := range pid1AllPIDs() {
		if st, err := pid1Stat(p); err == nil && st.ppid == parent {
			out = append(out, p)
		}
	}
	return out
}

// tail is the end of s, at most n bytes.
func pid1Tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
