//go:build linux

package haproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/haproxy"
)

// lbOut is what baton lb --json prints (the fields judged here).
type lbOut struct {
	OK     bool   `json:"ok"`
	Code   string `json:"code"`
	Error  string `json:"error"`
	Switch *struct {
		Refused          bool          `json:"refused"`
		RolledBack       bool          `json:"rolled_back"`
		SwitchedAfter    time.Duration `json:"switched_after_ns"`
		DrainedAfter     time.Duration `json:"drained_after_ns"`
		SessionsAtSwitch int           `json:"sessions_at_switch"`
	} `json:"switch"`
	Warnings []string   `json:"warnings"`
	Servers  []lbServer `json:"servers"`
}

type lbServer struct {
	Name     string `json:"name"`
	Status   string `json:"status"`
	Weight   int    `json:"weight"`
	Share    int    `json:"share_pct"`
	Health   string `json:"health"`
	Sessions int    `json:"sessions"`
}

func (o lbOut) server(name string) lbServer {
	for _, s := range o.Servers {
		if s.Name == name {
			return s
		}
	}
	return lbServer{}
}

// TestBatonLB drives the rig through the built baton binary, as an
// operator would: baton lb status; under non-retried POST load, a switch
// from blue (v1) to green (v2) with a slow request in flight on blue, a
// canary at 10%, its rollback, a promote; then blue replaced by a release
// that fails its health check 4 s after it is ready, put back in rotation
// with baton lb state, and a switch to it that puts all traffic back.
func TestBatonLB(t *testing.T) {
	r := startRig(t, 90*time.Second, map[string]string{"baton": "./cmd/baton"})
	blue, green := r.blue, r.green

	st := r.lbJSON(0, "status")
	if b, g := st.server("blue"), st.server("green"); b.Weight != 100 || b.Share != 100 || b.Health != "healthy" ||
		g.Weight != 0 || g.Share != 0 || g.Health != "healthy" {
		t.Fatalf("baton lb status --json: %+v; want blue weight 100 (100%%), green 0, both healthy", st.Servers)
	}
	if code, out, _ := r.baton("status"); code != 0 || !strings.Contains(out, "SERVER") || !strings.Contains(out, "green") {
		t.Errorf("baton lb status: exit %d\n%s", code, out)
	}
	if bad := r.lbJSON(2, "status", "--backend", "nosuch"); bad.Code != "usage" {
		t.Errorf("status of a backend HAProxy does not have: code %q, want usage (%s)", bad.Code, bad.Error)
	}

	load := r.startLoad()

	// 1. Blue/green switch, blue drained while its slow request runs.
	slow := r.holdSlow(r.front, 1500)
	mark := load.Snapshot()
	sw := r.lbJSON(0, "switch", "--from", "blue", "--to", "green", "--drain-timeout", "10s")
	if s := sw.Switch; s == nil || s.SessionsAtSwitch < 1 || s.DrainedAfter <= 0 {
		t.Errorf("baton lb switch: %+v; want blue's slow session waited for", s)
	} else {
		t.Logf("baton lb switch blue -> green: weights moved in %v, blue had %d sessions, drained %v after the switch",
			s.SwitchedAfter.Round(time.Millisecond), s.SessionsAtSwitch, s.DrainedAfter.Round(time.Millisecond))
	}
	if b, g := sw.server("blue"), sw.server("green"); g.Weight != 100 || g.Share != 100 || b.Weight != 0 || b.Status != "DRAIN" {
		t.Errorf("after baton lb switch: %+v", sw.Servers)
	}
	select {
	case <-r.ctx.Done():
		t.Fatal("the slow request was not answered")
	case a := <-slow:
		if a.err != nil || a.status != 200 || a.pid != blue.pid {
			t.Errorf("the slow request taken by blue before the switch: status %d from pid %d, %v; want 200 from blue (pid %d)", a.status, a.pid, a.err, blue.pid)
		}
	}
	r.phase(load, mark, 0, "during baton lb switch")
	after := r.phase(load, load.Snapshot(), 1000, "after baton lb switch")
	if after[blue.pid] != 0 || after[green.pid] == 0 {
		t.Errorf("after the switch: %d answers from v1 (want 0), %d from v2", after[blue.pid], after[green.pid])
	}

	// 2. Canary: blue (v1) stable, green (v2) at 10%, then rolled back.
	cn := r.lbJSON(0, "canary", "--stable", "blue", "--canary", "green", "--weight", "10")
	if b, g := cn.server("blue"), cn.server("green"); b.Weight != 90 || g.Weight != 10 || g.Share != 10 || len(cn.Warnings) != 0 {
		t.Errorf("after baton lb canary --weight 10: %+v, warnings %q", cn.Servers, cn.Warnings)
	}
	mark = load.Snapshot()
	canary := r.phase(load, mark, 3000, "canary at 10%")
	n := canary[blue.pid] + canary[green.pid]
	share := 100 * float64(canary[green.pid]) / float64(n)
	t.Logf("baton lb canary --weight 10: %d of %d answers from v2 = %.2f%%", canary[green.pid], n, share)
	if share < 7.5 || share > 12.5 || canary[0]-n > 2 { // a snapshot may count an answer by kind before its pid
		t.Errorf("canary at 10%%: v2 answered %.2f%% of %d (want 10 ± 2.5), %d answers in all", share, n, canary[0])
	}
	rb := r.lbJSON(0, "rollback", "--stable", "blue", "--canary", "green")
	rolledBack := time.Now()
	if b, g := rb.server("blue"), rb.server("green"); b.Weight != 100 || b.Share != 100 || g.Weight != 0 || g.Status != "DRAIN" {
		t.Errorf("after baton lb rollback: %+v", rb.Servers)
	}
	r.waitServers("green without sessions", func(s map[string]haproxy.Server) bool { return s["green"].Sessions == 0 })
	back := r.phase(load, load.Snapshot(), 1000, "after baton lb rollback")
	if sent := load.Snapshot().PIDs[green.pid].LastSent; sent.After(rolledBack) || back[blue.pid] == 0 {
		t.Errorf("after the rollback: v2 answered a request sent %v after it (want none; %d answers from it), %d from v1", sent.Sub(rolledBack), back[green.pid], back[blue.pid])
	}

	// 3. Promote: green gets everything, blue drains.
	pr := r.lbJSON(0, "promote", "--stable", "blue", "--canary", "green")
	if b, g := pr.server("blue"), pr.server("green"); g.Share != 100 || b.Weight != 0 || b.Status != "DRAIN" {
		t.Errorf("after baton lb promote: %+v", pr.Servers)
	}
	promoted := r.phase(load, load.Snapshot(), 500, "after baton lb promote")
	if promoted[blue.pid] != 0 {
		t.Errorf("after the promote: %d answers from v1, want 0", promoted[blue.pid])
	}
	if ref := r.lbJSON(1, "state", "--server", "green", "--set", "drain"); ref.Code != "failed" || !strings.Contains(ref.Error, "no other server") {
		t.Errorf("draining the only server taking traffic: code %q, %s; want refused", ref.Code, ref.Error)
	}

	// 4. A release that fails its health check: blue out of rotation,
	// replaced by a v3 whose /healthz answers 503 from 4 s after it is
	// ready, back in rotation, then a switch to it.
	r.lbJSON(0, "state", "--server", "blue", "--set", "maint")
	r.stopHello(blue)
	sick := r.startHello("hapblue2", blue.addr, "v3", "-unhealthy-after", "4s")
	r.lbJSON(0, "state", "--server", "blue", "--set", "ready")
	mark = load.Snapshot()
	code, out, errOut := r.baton("switch", "--from", "green", "--to", "blue", "--drain-timeout", "15s", "--watch", "15s")
	rolledBack = time.Now()
	if code != 1 || !strings.Contains(errOut, "lb switch failed (rolled_back)") || !strings.Contains(errOut, "all traffic is back on green") {
		t.Fatalf("baton lb switch to a release failing its checks: exit %d, want 1 and rolled_back\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	t.Logf("baton lb switch green -> sick blue, exit %d:\n%s", code, errOut)
	s := r.servers()
	if s["green"].Weight != 100 || s["green"].Draining() || s["blue"].Weight != 0 {
		t.Errorf("after the roll-back: green %s weight %d, blue %s weight %d", s["green"].Status, s["green"].Weight, s["blue"].Status, s["blue"].Weight)
	}
	r.waitServers("the sick blue without sessions", func(s map[string]haproxy.Server) bool { return s["blue"].Sessions == 0 })
	during := r.phase(load, mark, 0, "baton lb switch to the sick release and its roll-back")
	back = r.phase(load, load.Snapshot(), 1000, "after the roll-back")
	if sent := load.Snapshot().PIDs[sick.pid].LastSent; sent.After(rolledBack) || back[green.pid] == 0 {
		t.Errorf("after the roll-back: the sick v3 answered a request sent %v after it (want none; %d answers from it), %d from v2",
			sent.Sub(rolledBack), back[sick.pid], back[green.pid])
	}
	t.Logf("the sick v3 answered %d requests between the switch and the roll-back", during[sick.pid])

	// Once HAProxy has taken it out, a switch or a canary to it is refused.
	r.waitServers("the sick blue down", func(s map[string]haproxy.Server) bool { return s["blue"].HasCheck() && !s["blue"].Up() })
	ref := r.lbJSON(1, "switch", "--from", "green", "--to", "blue")
	if ref.Code != "failed" || ref.Switch == nil || !ref.Switch.Refused || ref.Switch.RolledBack {
		t.Errorf("baton lb switch to a server that is down: %+v; want code failed, refused", ref)
	}
	if c := r.lbJSON(1, "canary", "--stable", "green", "--canary", "blue", "--weight", "10"); c.Code != "failed" || c.server("green").Share != 100 {
		t.Errorf("baton lb canary on a server that is down: %+v; want code failed, green keeping all traffic", c)
	}
}

// baton runs `baton lb SUB --haproxy SOCK --backend app ARGS...` (a
// later --backend wins) and returns its exit code, stdout and stderr.
func (r *rig) baton(sub string, args ...string) (code int, stdout, stderr string) {
	r.t.Helper()
	args = append([]string{"lb", sub, "--haproxy", r.sock, "--backend", "app"}, args...)
	cmd := exec.CommandContext(r.ctx, r.bins["baton"], args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		r.t.Fatalf("baton %s: %v", strings.Join(args, " "), err)
	}
	return code, o.String(), e.String()
}

// lbJSON runs baton lb SUB ... --json, wants exit code want, and decodes
// its report.
func (r *rig) lbJSON(want int, sub string, args ...string) lbOut {
	r.t.Helper()
	code, out, errOut := r.baton(sub, append(args, "--json")...)
	var o lbOut
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		r.t.Fatalf("baton lb %s %v --json: exit %d, unreadable report: %v\nstdout:\n%s\nstderr:\n%s", sub, args, code, err, out, errOut)
	}
	if code != want || o.OK != (want == 0) {
		r.t.Fatalf("baton lb %s %v --json: exit %d ok %v, want exit %d\nstdout:\n%s\nstderr:\n%s", sub, args, code, o.OK, want, out, errOut)
	}
	return o
}
