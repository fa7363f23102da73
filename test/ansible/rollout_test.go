//go:build linux

// Package ansible tests the baton.fleet Ansible collection
// (deploy/ansible) with ansible-core against three local library services
// (examples/hello), one per inventory host, all with connection local.
package ansible

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/proctest"
	"github.com/baton-go/baton/internal/testenv"
)

// host is one inventory host: a hello service of its own, and the paths
// the play uses on it.
type host struct {
	name      string // inventory name
	service   string // baton --name
	addr      string
	installed string // the service's installed binary
	batonBin  string // where the install play puts the baton CLI
	candidate string // where the rollout copies the new binary
	svc       *proctest.Service
	log       *os.File
}

// recap is one host's line of the PLAY RECAP.
type recap struct{ ok, changed, unreachable, failed int }

var recapLine = regexp.MustCompile(`(?m)^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)

// TestRolloutStopsAtFirstFailedHost: three services on web1..web3; the
// second host's new binary is broken (truncated). The rollout (serial 1)
// upgrades web1, web2 refuses the binary and the play stops, web3 is not
// touched (nothing copied, no upgrade asked); all three keep serving. A
// second run leaves web1 alone (ok, not changed) and stops at web2 again;
// with web2's binary fixed, a third run completes, web1 still unchanged.
func TestRolloutStopsAtFirstFailedHost(t *testing.T) {
	playbook := testenv.Command(t, "ansible-playbook", "ansible-core")
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	// A short directory: unix socket paths are limited to ~104 bytes.
	dir, err := os.MkdirTemp("", "bans")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	runDir := filepath.Join(dir, "run")
	t.Setenv("BATON_RUNTIME_DIR", runDir)
	start := time.Now()
	bins, err := proctest.Build(root, filepath.Join(dir, "bin"), map[string]string{
		"hello":    "./examples/hello",
		"hello-v2": "./examples/hello",
		"baton":    "./cmd/baton",
	}, map[string][]string{
		"hello":    {"-ldflags", "-X main.buildVersion=v1"},
		"hello-v2": {"-ldflags", "-X main.buildVersion=v2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built hello v1, v2 and baton in %v", time.Since(start).Round(time.Millisecond))
	broken := filepath.Join(dir, "bin", "hello-broken")
	truncatedCopy(t, bins["hello-v2"], broken, 64<<10)

	tracker := proctest.NewTracker()
	t.Cleanup(tracker.Close) // after the services' clean-up below (last in, first out)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hosts := make([]*host, 3)
	for i := range hosts {
		h := &host{name: fmt.Sprintf("web%d", i+1), service: fmt.Sprintf("ans%d", i+1), addr: freeAddr(t)}
		hd := filepath.Join(dir, h.name)
		if err := os.MkdirAll(hd, 0o755); err != nil {
			t.Fatal(err)
		}
		h.installed, h.batonBin, h.candidate = filepath.Join(hd, "hello"), filepath.Join(hd, "bin", "baton"), filepath.Join(hd, "hello.candidate")
		copyFile(t, bins["hello"], h.installed)
		if h.log, err = os.Create(filepath.Join(hd, "service.log")); err != nil {
			t.Fatal(err)
		}
		h.svc, err = proctest.Start(ctx, tracker, bins["baton"], h.service, os.Environ(), h.log, h.installed,
			"-name", h.service, "-addr", h.addr, "-idle-grace", "100ms")
		if err != nil {
			t.Fatalf("%s: %v", h.name, err)
		}
		hosts[i] = h
	}
	t.Cleanup(func() {
		for _, h := range hosts {
			if h == nil {
				continue
			}
			stopService(t, tracker, bins["baton"], h)
			if t.Failed() {
				b, _ := os.ReadFile(h.log.Name())
				t.Logf("%s service log:\n%s", h.name, lastBytes(b, 3000))
			}
			h.log.Close()
		}
	})
	first := make([]answer, 3)
	for i, h := range hosts {
		first[i] = mustGet(t, h)
		if first[i].version != "v1" {
			t.Fatalf("%s answers version %q before the rollout, want v1", h.name, first[i].version)
		}
	}

	inventory := filepath.Join(dir, "inventory.yml")
	writeInventory(t, inventory, hosts, map[string]string{
		"web1": bins["hello-v2"], "web2": broken, "web3": bins["hello-v2"],
	}, bins["baton"], runDir)
	ansible := func(play string) (int, string, map[string]recap) {
		t.Helper()
		cmd := exec.CommandContext(ctx, playbook, "-i", inventory, play)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(),
			"ANSIBLE_COLLECTIONS_PATH="+filepath.Join(root, "deploy", "ansible"),
			"ANSIBLE_HOME="+filepath.Join(dir, "ansible-home"),
			"ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "ansible-tmp"),
			"ANSIBLE_REMOTE_TEMP="+filepath.Join(dir, "ansible-tmp"),
			"ANSIBLE_NOCOLOR=1", "ANSIBLE_RETRY_FILES_ENABLED=0", "ANSIBLE_PIPELINING=1")
		start := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("ansible-playbook %s: %v", play, time.Since(start).Round(time.Millisecond))
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("ansible-playbook %s: %v\n%s", play, err, out)
		}
		rs := map[string]recap{}
		for _, m := range recapLine.FindAllStringSubmatch(string(out), -1) {
			n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
			rs[m[1]] = recap{ok: n(2), changed: n(3), unreachable: n(4), failed: n(5)}
		}
		return code, string(out), rs
	}

	// The baton CLI, installed on each host by the baton role.
	code, out, rs := ansible("baton.fleet.install")
	if code != 0 {
		t.Fatalf("install play: exit %d\n%s", code, out)
	}
	for _, h := range hosts {
		if rs[h.name].changed == 0 || rs[h.name].failed != 0 {
			t.Errorf("install play, %s: %+v, want changed", h.name, rs[h.name])
		}
		if sha(t, h.batonBin) != sha(t, bins["baton"]) {
			t.Errorf("%s: baton not installed at %s", h.name, h.batonBin)
		}
	}
	// Idempotent: the same play again finds every host as it should be
	// and changes nothing.
	code, out, rs = ansible("baton.fleet.install")
	if code != 0 {
		t.Fatalf("install play, second run: exit %d\n%s", code, out)
	}
	t.Logf("install play, second run: recap %+v", rs)
	for _, h := range hosts {
		if r, ok := rs[h.name]; !ok || r.ok == 0 || r.changed != 0 || r.failed != 0 || r.unreachable != 0 {
			t.Errorf("install play, second run, %s: %+v (in the recap: %v), want ok and changed=0\n%s", h.name, r, ok, out)
		}
	}

	// Run 1: web1 upgraded, web2 refuses, web3 untouched.
	code, out, rs = ansible("baton.fleet.rollout")
	t.Logf("rollout 1: exit %d, recap %+v", code, rs)
	if code == 0 {
		t.Fatalf("rollout with a broken binary on web2 exited 0\n%s", out)
	}
	if r := rs["web1"]; r.changed == 0 || r.failed != 0 {
		t.Errorf("rollout 1, web1: %+v, want changed and not failed\n%s", r, out)
	}
	if r := rs["web2"]; r.failed != 1 {
		t.Errorf("rollout 1, web2: %+v, want failed\n%s", r, out)
	}
	if !strings.Contains(out, "exited 1 (code not_executable)") || !strings.Contains(out, "baton refused the binary: nothing changed") {
		t.Errorf("rollout 1: the failure does not give baton's exit code, refusal code (not_executable) and what it means\n%s", out)
	}
	checkUntouched(t, "rollout 1", hosts[2], rs, first[2], bins["hello"])
	upgraded := mustGet(t, hosts[0])
	if upgraded.version != "v2" || upgraded.pid == first[0].pid {
		t.Errorf("web1 after rollout 1: %+v, want v2 from a new pid (was %d)", upgraded, first[0].pid)
	}
	if a := mustGet(t, hosts[1]); a.version != "v1" || a.pid != first[1].pid {
		t.Errorf("web2 after its refusal: %+v, want v1 from pid %d", a, first[1].pid)
	}
	if sha(t, hosts[1].installed) != sha(t, bins["hello"]) {
		t.Errorf("web2: the installed binary changed though the upgrade was refused")
	}

	// Run 2: web1 already runs the wanted binary: ok, not changed.
	code, out, rs = ansible("baton.fleet.rollout")
	t.Logf("rollout 2: exit %d, recap %+v", code, rs)
	if r := rs["web1"]; code == 0 || r.changed != 0 || r.failed != 0 || r.ok == 0 {
		t.Errorf("rollout 2: exit %d, web1 %+v, want web1 ok and unchanged, the play stopped at web2 again\n%s", code, r, out)
	}
	if rs["web2"].failed != 1 {
		t.Errorf("rollout 2, web2: %+v, want failed", rs["web2"])
	}
	checkUntouched(t, "rollout 2", hosts[2], rs, first[2], bins["hello"])
	if a := mustGet(t, hosts[0]); a.pid != upgraded.pid {
		t.Errorf("web1 was upgraded again by rollout 2: pid %d, was %d", a.pid, upgraded.pid)
	}

	// Run 3: web2's binary fixed: the rollout completes.
	writeInventory(t, inventory, hosts, map[string]string{
		"web1": bins["hello-v2"], "web2": bins["hello-v2"], "web3": bins["hello-v2"],
	}, bins["baton"], runDir)
	code, out, rs = ansible("baton.fleet.rollout")
	t.Logf("rollout 3: exit %d, recap %+v", code, rs)
	if code != 0 {
		t.Fatalf("rollout 3: exit %d\n%s", code, out)
	}
	if rs["web1"].changed != 0 || rs["web2"].changed == 0 || rs["web3"].changed == 0 {
		t.Errorf("rollout 3: %+v, want web1 unchanged, web2 and web3 changed", rs)
	}
	for i, h := range hosts {
		a := mustGet(t, h)
		if a.version != "v2" || a.pid == first[i].pid {
			t.Errorf("%s after rollout 3: %+v, want v2 from a new pid", h.name, a)
		}
	}
	if a := mustGet(t, hosts[0]); a.pid != upgraded.pid {
		t.Errorf("web1 was upgraded again by rollout 3: pid %d, was %d", a.pid, upgraded.pid)
	}
}

// checkUntouched: h was never reached by the play (no recap line, or one
// with nothing done), its binary was not even copied, it was never asked
// to upgrade, and it still serves from its first generation.
func checkUntouched(t *testing.T, when string, h *host, rs map[string]recap, first answer, v1 string) {
	t.Helper()
	if r, ok := rs[h.name]; ok && (r.ok != 0 || r.changed != 0 || r.failed != 0) {
		t.Errorf("%s: %s was reached by the play: %+v", when, h.name, r)
	}
	if _, err := os.Stat(h.candidate); !os.IsNotExist(err) {
		t.Errorf("%s: the new binary was copied to %s: %v", when, h.name, err)
	}
	if sha(t, h.installed) != sha(t, v1) {
		t.Errorf("%s: %s's installed binary changed", when, h.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := h.svc.Status(ctx)
	if err != nil {
		t.Fatalf("%s: status of %s: %v", when, h.name, err)
	}
	if st.Last != nil || st.Generation != 1 {
		t.Errorf("%s: %s was asked to upgrade: generation %d, last %+v", when, h.name, st.Generation, st.Last)
	}
	if a := mustGet(t, h); a.version != "v1" || a.pid != first.pid {
		t.Errorf("%s: %s answers %+v, want v1 from pid %d", when, h.name, a, first.pid)
	}
}

// writeInventory writes the YAML inventory: every host local, its service
// name, its paths and the new binary to roll out (src, on the controller).
func writeInventory(t *testing.T, path string, hosts []*host, src map[string]string, baton, runDir string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "all:\n  vars:\n")
	fmt.Fprintf(&b, "    ansible_connection: local\n")
	fmt.Fprintf(&b, "    ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n")
	fmt.Fprintf(&b, "    baton_binary_src: %q\n", baton)
	fmt.Fprintf(&b, "    baton_environment: {BATON_RUNTIME_DIR: %q}\n", runDir)
	fmt.Fprintf(&b, "    baton_rollout_busy_delay: 1\n")
	fmt.Fprintf(&b, "  hosts:\n")
	for _, h := range hosts {
		fmt.Fprintf(&b, "    %s:\n", h.name)
		fmt.Fprintf(&b, "      baton_bin: %q\n", h.batonBin)
		fmt.Fprintf(&b, "      baton_rollout_name: %q\n", h.service)
		fmt.Fprintf(&b, "      baton_rollout_binary_src: %q\n", src[h.name])
		fmt.Fprintf(&b, "      baton_rollout_binary: %q\n", h.candidate)
		fmt.Fprintf(&b, "      baton_rollout_health_url: \"http://%s/healthz\"\n", h.addr)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// answer is what a service said to GET /.
type answer struct {
	pid     int
	version string
}

func mustGet(t *testing.T, h *host) answer {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + h.addr + "/")
	if err != nil {
		t.Fatalf("%s does not serve: %v", h.name, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	pid, _ := strconv.Atoi(resp.Header.Get("X-Pid"))
	if resp.StatusCode != http.StatusOK || pid <= 0 {
		t.Fatalf("%s: GET / %s, X-Pid %q", h.name, resp.Status, resp.Header.Get("X-Pid"))
	}
	return answer{pid: pid, version: resp.Header.Get("X-Version")}
}

// stopService stops h's service with baton stop and waits until every
// process of it is gone.
func stopService(t *testing.T, tracker *proctest.Tracker, baton string, h *host) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The serving generation may be a later one than the first we started
	// (an orphan reparented to this process, a subreaper): watch it too.
	if st, err := h.svc.Status(ctx); err == nil && st.PID > 0 {
		tracker.Track(st.PID)
	}
	if out, err := exec.CommandContext(ctx, baton, "stop", "--name", h.service).CombinedOutput(); err != nil {
		t.Errorf("baton stop --name %s: %v: %s", h.service, err, out)
	}
	for _, pid := range tracker.Live() {
		if _, err := tracker.WaitExit(ctx, pid); err != nil {
			t.Errorf("%s: process %d left running after stop: %v", h.name, pid, err)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := proctest.FreeAddr("tcp")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	if err := proctest.InstallCopy(src, dst); err != nil {
		t.Fatal(err)
	}
}

// truncatedCopy writes the first n bytes of src to dst: a binary cut short
// by a failed download.
func truncatedCopy(t *testing.T, src, dst string, n int) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b[:n], 0o755); err != nil {
		t.Fatal(err)
	}
}

func sha(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func lastBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// TestCollectionBuilds: ansible-galaxy builds the collection (galaxy.yml is
// valid) and the artifact holds both roles and both playbooks.
func TestCollectionBuilds(t *testing.T) {
	galaxy := testenv.Command(t, "ansible-galaxy", "ansible-core")
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command(galaxy, "collection", "build", "--output-path", out)
	cmd.Dir = filepath.Join(root, "deploy", "ansible", "ansible_collections", "baton", "fleet")
	cmd.Env = append(os.Environ(), "ANSIBLE_HOME="+filepath.Join(out, "home"), "ANSIBLE_NOCOLOR=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ansible-galaxy collection build: %v\n%s", err, b)
	}
	tarball := filepath.Join(out, "baton-fleet-0.1.0.tar.gz")
	b, err := exec.Command("tar", "tzf", tarball).CombinedOutput()
	if err != nil {
		t.Fatalf("tar tzf %s: %v\n%s", tarball, err, b)
	}
	for _, f := range []string{"README.md", "roles/baton/tasks/main.yml", "roles/baton_rollout/tasks/main.yml",
		"playbooks/install.yml", "playbooks/rollout.yml", "meta/runtime.yml"} {
		if !strings.Contains("\n"+string(b), "\n"+f+"\n") {
			t.Errorf("the collection artifact has no %s:\n%s", f, b)
		}
	}
}
