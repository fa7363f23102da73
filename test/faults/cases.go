//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proctest"
	"github.com/baton-go/baton/test/faults/rig"
	"golang.org/x/sys/unix"
)

// Targets are the binaries the cases use.
func Targets() map[string]rig.Target {
	hello := func(ldflags string) rig.Target {
		return rig.Target{Pkg: "./examples/hello", Flags: []string{"-ldflags", ldflags}}
	}
	return map[string]rig.Target{
		"baton":           {Pkg: "./cmd/baton"},
		"hello-v1":        hello("-X main.buildVersion=v1"),
		"hello-v2":        hello("-X main.buildVersion=v2"),
		"hello-hang":      hello("-X main.buildVersion=hang -X main.hangBeforeReady=1"),
		"hello-crashy":    hello("-X main.buildVersion=crashy -X main.buildExitAfter=1s"),
		"hello-crashloop": hello("-X main.buildVersion=crashloop -X main.buildExitAfter=400ms"),
		"hello-otherarch": {Pkg: "./examples/hello", Env: []string{"GOARCH=" + rig.GOARCHOther(), "CGO_ENABLED=0"}},
		"badapp-exit":     {Pkg: "./test/e2e/testdata/badapp", Flags: []string{"-ldflags", "-X main.mode=exit"}},
		"badstate":        {Pkg: "./test/faults/testdata/badstate"},
	}
}

// Case is one fault, run in each of its modes.
type Case struct {
	Name   string
	Modes  []rig.Mode
	Expect map[rig.Mode]string // "" key: every mode
	Fn     func(c *C) Row
	Limit  time.Duration // the case's time bound (default 2 minutes)
}

// Row is one line of the table.
type Row struct {
	Case, Mode, Expected, Observed, Failed string
	Pass                                   bool
	Took                                   time.Duration
	Log                                    string // the service's log tail when it failed
}

// C is what a case function gets.
type C struct {
	ctx  context.Context
	env  *rig.Env
	mode rig.Mode
	name string // the service's name, unique per case and mode
	svc  *rig.Svc
}

var pidRE = regexp.MustCompile(`pid (\d+)`)

var both = []rig.Mode{rig.Library, rig.Run}

var serial int

// RunCase runs c in mode m with its own service name and bounded time; a
// panic or an error is a FAIL row.
func RunCase(ctx context.Context, env *rig.Env, c Case, m rig.Mode) (row Row) {
	serial++
	limit := c.Limit
	if limit == 0 {
		limit = 2 * time.Minute
	}
	cctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cc := &C{ctx: cctx, env: env, mode: m, name: fmt.Sprintf("flt%02d", serial)}
	exp := c.Expect[m]
	if exp == "" {
		exp = c.Expect[""]
	}
	defer func() {
		if p := recover(); p != nil {
			row = Row{Observed: fmt.Sprintf("error: %v", p), Failed: "-", Log: string(debug.Stack())}
		}
		row.Case, row.Mode, row.Expected = c.Name, string(m), exp
		if cc.svc != nil {
			if !row.Pass && row.Log == "" {
				row.Log = cc.svc.LogTail(2500)
			}
			cc.svc.Stop()
		}
	}()
	return c.Fn(cc)
}

// must panics on err (RunCase turns it into a FAIL row).
func must(err error, what string) {
	if err != nil {
		panic(fmt.Sprintf("%s: %v", what, err))
	}
}

// start starts hello (or o.Bin) for the case with short drains.
func (c *C) start(o rig.Opts) *rig.Svc {
	o.Hello = append([]string{"-idle-grace", "500ms"}, o.Hello...)
	if c.mode == rig.Run {
		o.Run = append([]string{"--drain-timeout", "10s"}, o.Run...)
	}
	svc, err := c.env.Start(c.ctx, c.mode, c.name, o)
	must(err, "start")
	c.svc = svc
	return svc
}

// load starts the POST load and waits until the serving pid answers.
func (c *C) load(keepAlive, fresh int) (*loadgen.Load, int) {
	l, err := rig.POSTLoad(c.ctx, c.svc.Addr, keepAlive, fresh)
	must(err, "load")
	pid := c.svc.Serving(c.ctx)
	if pid == 0 {
		panic("no serving generation")
	}
	wctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	if !rig.WaitAnswers(wctx, l, pid, 20) {
		panic(fmt.Sprintf("pid %d does not answer the load", pid))
	}
	return l, pid
}

func (c *C) upgrade(extra ...string) proctest.UpgradeReport {
	rep, err := c.svc.Upgrade(c.ctx, extra...)
	must(err, "baton upgrade")
	return rep
}

// stillServes reports whether pid still answers the load (30 more answers
// within 5 s).
func (c *C) stillServes(l *loadgen.Load, pid int) bool {
	wctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	return rig.WaitAnswers(wctx, l, pid, 30)
}

func repStr(rep proctest.UpgradeReport) string {
	if rep.ExitCode == 0 && rep.OK {
		return "exit 0"
	}
	return fmt.Sprintf("exit %d %s", rep.ExitCode, rep.Code)
}

func fileSHA(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Cases is the fault matrix.
func Cases() []Case {
	return []Case{
		{Name: "bad binary", Modes: both, Fn: refusedBinary("garbage"),
			Expect: map[rig.Mode]string{"": "refused (exit 1 not_executable), nothing changes"}},
		{Name: "truncated binary", Modes: both, Fn: refusedBinary("truncated"),
			Expect: map[rig.Mode]string{"": "refused (exit 1 not_executable), nothing changes"}},
		{Name: "wrong-arch binary", Modes: both, Fn: refusedBinary("hello-otherarch"),
			Expect: map[rig.Mode]string{"": "refused (exit 1 not_executable), nothing changes"}},
		{Name: "hang before ready", Modes: both, Fn: failedStart("hello-hang", contract.CodeReadyTimeout),
			Expect: map[rig.Mode]string{"": "exit 1 ready_timeout (2 s), killed; old keeps serving"}},
		{Name: "crash before ready", Modes: both, Fn: failedStart("badapp-exit", contract.CodeChildExited),
			Expect: map[rig.Mode]string{"": "exit 1 child_exited; old keeps serving"}},
		{Name: "crash in probation", Modes: []rig.Mode{rig.Run}, Fn: crashInProbation,
			Expect: map[rig.Mode]string{"": "exit 1 rolled_back, the previous release serves; port never dark; only requests in flight on the crashing process fail"}},
		{Name: "crash after handover", Modes: both, Fn: crashAfterHandover,
			Expect: map[rig.Mode]string{
				rig.Library: "port never dark (0 refused connections), a new pid serves (the old generation or its binary again); at most the 6 requests in flight on the killed process fail",
				rig.Run:     "supervisor restarts it: port never dark (0 refused connections), a new pid serves; at most the 6 requests in flight on the killed process fail",
			}},
		{Name: "crash loop", Modes: []rig.Mode{rig.Run}, Fn: crashLoop,
			Expect: map[rig.Mode]string{"": "falls back to the last release that stayed up (v1 serves), port never dark, supervisor stays; at most one request per client cut per crash (6 × 6)"}},
		{Name: "refuse to exit", Modes: both, Fn: refuseToExit,
			Expect: map[rig.Mode]string{
				rig.Library: "old generation ends at its 2 s drain deadline (its 30 s request cut), or when the 3 s probation of its successor ends; no other request fails",
				rig.Run:     "supervisor kills the old generation at --drain-timeout 2s (it would wait 30 s); no other request fails",
			}},
		{Name: "supervisor kill -9", Modes: []rig.Mode{rig.Run}, Fn: supervisorKill,
			Expect: map[rig.Mode]string{"": "every generation exits with it (pdeathsig), the port is closed (connections refused at once, none hang), leftover runtime files swept by the next baton run"}},
		{Name: "upgrade storm", Modes: both, Fn: upgradeStorm,
			Expect: map[rig.Mode]string{"": "25 back-to-back upgrades: each exit 0 or 4 too_many_draining, 0 failed requests, every old generation exits"}},
		{Name: "concurrent upgrades", Modes: both, Fn: concurrentUpgrades,
			Expect: map[rig.Mode]string{"": "5 at once: one exit 0, four exit 4 busy; 0 failed requests"}},
		{Name: "disk full", Modes: both, Fn: diskFull,
			Expect: map[rig.Mode]string{"": "refused (exit 1 disk_space), nothing changes"}},
		{Name: "descriptor limit", Modes: both, Fn: descriptorLimit,
			Expect: map[rig.Mode]string{"": "EMFILE: exit 1 resources; old keeps serving"}},
		{Name: "foreign user", Modes: both, Fn: foreignUser,
			Expect: map[rig.Mode]string{"": "upgrade as user nobody refused (exit 3: forbidden, or unreachable), nothing changes"}},
		{Name: "oversized state", Modes: both, Fn: oversizedState,
			Expect: map[rig.Mode]string{"": "exit 1 state (too large); old keeps serving"}},
		{Name: "corrupt state (unreadable)", Modes: both, Fn: unreadableState,
			Expect: map[rig.Mode]string{"": "new release refuses the blob: exit 1 child_exited; old keeps serving"}},
		{Name: "corrupt state (checksum)", Modes: []rig.Mode{rig.Library}, Fn: corruptStateInTransit,
			Expect: map[rig.Mode]string{"": "a real hello given a handoff whose state fails its sha256 refuses it (code state) and exits non-zero"}},
		{Name: "clock jump", Modes: both, Fn: clockJump,
			Expect: map[rig.Mode]string{
				rig.Library: "ready timeout still 2 s with the service's CLOCK_MONOTONIC offset by +1 year (time namespace); wall clock: by reasoning, not changed here",
				rig.Run:     "ready timeout still 2 s with the supervisor's (and its generations') CLOCK_MONOTONIC offset by +1 year (time namespace); wall clock: by reasoning, not changed here",
			}},
		// Issue 14's own problems (1, 2, 3, 5) and what it found held.
		{Name: "symlinked runtime dir", Modes: both, Fn: symlinkedRuntimeDir,
			Expect: map[rig.Mode]string{"": "nobody's link to root's runtime dir: a service of root's started through it refuses to start; root's status and upgrade --binary through it exit 3 forbidden, also once it points at nobody's own service; nothing of root's written there; the service serves on"}},
		{Name: "candidate is a FIFO", Modes: both, Fn: badCandidate("fifo"),
			Expect: map[rig.Mode]string{"": "upgrade --binary of nobody's FIFO: exit 1 not_executable at once (< 10 s), releases lock free, no .check-* left, installed binary unchanged"}},
		{Name: "candidate links to /dev/zero", Modes: both, Fn: badCandidate("devzero"),
			Expect: map[rig.Mode]string{"": "upgrade --binary of nobody's link to /dev/zero: exit 1 not_executable at once (< 10 s), releases lock free, no .check-* left, installed binary unchanged"}},
		{Name: "candidate swapped (race)", Modes: both, Fn: candidateRace,
			Expect: map[rig.Mode]string{"": "12 upgrades --binary while the name flips between v2, a FIFO and a link to /dev/zero: each exit 0 installing the real v2 or exit 1 not_executable, none blocks (< 10 s); lock free, no .check-* left; 0 failed requests"}},
		{Name: "foreign READY=1", Modes: []rig.Mode{rig.Run}, Fn: foreignReady,
			Expect: map[rig.Mode]string{"": "READY=1 from another process on a hanging release's notify socket ignored: exit 1 ready_timeout (2 s), old keeps serving, 0 failed"}},
		{Name: "link taken first", Modes: []rig.Mode{rig.Run}, Fn: linkTakenFirst,
			Expect: map[rig.Mode]string{"": "another process first on generation 2's link, claiming its pid: refused; generation 2 itself gets the link and the state (exit 0, v2 serves, its count includes the old one's), 0 failed"}},
		{Name: "baton stop, 10 times", Modes: both, Fn: repeatedStop, Limit: 5 * time.Minute,
			Expect: map[rig.Mode]string{"": "each exit 0; nothing of the name left in the runtime dir when it returns; every process exits; only connections made after the stop are refused"}},
		{Name: "malformed control messages", Modes: both, Fn: malformedControl,
			Expect: map[rig.Mode]string{"": "11 malformed messages each answered with an error (the 2 MiB line: answered or cut); nothing happens (no stop, no upgrade); then an upgrade exits 0; 0 failed"}},
		{Name: "slowloris (control)", Modes: both, Fn: slowloris("control"),
			Expect: map[rig.Mode]string{"": "2,000 half-open control connections held: status answers (< 5 s), an upgrade exits 0, the service closes all of them (10 s request timeout); 0 failed"}},
		{Name: "slowloris (port)", Modes: both, Fn: slowloris("port"),
			Expect: map[rig.Mode]string{"": "2,000 half-open HTTP requests held on the port: status answers (< 5 s), an upgrade exits 0, the service closes all of them; 0 failed"}},
	}
}

// candidate returns the path of a bad candidate binary, made on first use.
func (c *C) candidate(kind string) string {
	switch kind {
	case "garbage":
		p := filepath.Join(c.env.Dir, "garbage")
		b := make([]byte, 256<<10)
		rand.Read(b)
		must(os.WriteFile(p, b, 0o755), "garbage")
		return p
	case "truncated":
		b, err := os.ReadFile(c.env.Bins["hello-v2"])
		must(err, "read hello-v2")
		p := filepath.Join(c.env.Dir, "truncated")
		must(os.WriteFile(p, b[:len(b)*2/3], 0o755), "truncated")
		return p
	}
	return c.env.Bins[kind]
}

func refusedBinary(kind string) func(c *C) Row {
	return func(c *C) Row {
		svc := c.start(rig.Opts{})
		l, pid0 := c.load(4, 2)
		sha0 := fileSHA(svc.Installed)
		rep := c.upgrade("--binary", c.candidate(kind))
		serves := c.stillServes(l, pid0)
		r := l.Stop()
		pid1 := svc.Serving(c.ctx)
		same := fileSHA(svc.Installed) == sha0
		return Row{
			Observed: fmt.Sprintf("%s; installed binary unchanged: %v; pid %d serves (was %d)", repStr(rep), same, pid1, pid0),
			Failed:   rig.Failed(r),
			Pass:     rep.ExitCode == 1 && rep.Code == contract.CodeNotExecutable && same && pid1 == pid0 && serves && r.TotalFailed() == 0,
		}
	}
}

func failedStart(bin, code string) func(c *C) Row {
	return func(c *C) Row {
		o := rig.Opts{Hello: []string{"-ready-timeout", "2s"}}
		if c.mode == rig.Run {
			o.Run = []string{"--ready-timeout", "2s"}
		}
		svc := c.start(o)
		l, pid0 := c.load(4, 2)
		must(svc.Install(c.env.Bins[bin]), "install")
		rep := c.upgrade()
		serves := c.stillServes(l, pid0)
		r := l.Stop()
		pid1 := svc.Serving(c.ctx)
		newPID := 0
		if rep.ChildExit != nil {
			newPID = rep.ChildExit.PID
		} else if m := pidRE.FindStringSubmatch(rep.Error); m != nil {
			newPID, _ = strconv.Atoi(m[1])
		}
		killed := "; new pid unknown"
		if newPID > 0 {
			killed = fmt.Sprintf("; new pid %d alive after: %v", newPID, rig.Alive(newPID))
		}
		return Row{
			Observed: fmt.Sprintf("%s after %v%s; pid %d serves (was %d)", repStr(rep), rep.Returned.Sub(rep.Triggered).Round(10*time.Millisecond), killed, pid1, pid0),
			Failed:   rig.Failed(r),
			Pass:     rep.ExitCode == 1 && rep.Code == code && newPID > 0 && !rig.Alive(newPID) && pid1 == pid0 && serves && r.TotalFailed() == 0,
		}
	}
}

func crashInProbation(c *C) Row {
	svc := c.start(rig.Opts{Run: []string{"--probation", "3s"}})
	l, pid0 := c.load(4, 2)
	p, err := rig.StartProber(svc.Addr)
	must(err, "prober")
	must(svc.Install(c.env.Bins["hello-crashy"]), "install")
	rep := c.upgrade()
	pid1 := svc.Serving(c.ctx)
	serves := pid1 != 0 && c.stillServes(l, pid1)
	r := l.Stop()
	_, refused := p.Stop()
	ver := r.PIDs[pid1].Version
	return Row{
		Observed: fmt.Sprintf("%s; pid %d (%s) serves (was %d); refused connections %d", repStr(rep), pid1, ver, pid0, refused),
		Failed:   rig.Failed(r),
		Pass: rep.ExitCode == 1 && rep.Code == contract.CodeRolledBack && serves && ver == "v1" && refused == 0 &&
			r.TotalFailed() <= 6, // the 6 clients' requests in flight on the crashing process
	}
}

func crashAfterHandover(c *C) Row {
	o := rig.Opts{}
	if c.mode == rig.Run {
		o.Run = []string{"--restart-min", "100ms"}
	}
	svc := c.start(o)
	l, pid0 := c.load(4, 2)
	p, err := rig.StartProber(svc.Addr)
	must(err, "prober")
	must(svc.Install(c.env.Bins["hello-v2"]), "install")
	repc := make(chan proctest.UpgradeReport, 1)
	go func() { repc <- c.upgrade() }()
	// Kill the new generation a few ms after the upgrade returned; if the
	// upgrade waits (a probation), a few ms after its first answer.
	var target int
	var trigger string
	var rep proctest.UpgradeReport
	returned := false
	var firstAnswer time.Time
	for target == 0 {
		select {
		case rep = <-repc:
			returned = true
			if rep.Result == nil {
				return Row{Observed: "upgrade failed before the kill: " + repStr(rep) + " " + rep.Error, Failed: rig.Failed(l.Stop())}
			}
			target, trigger = rep.Result.PID, "after baton upgrade returned "+repStr(rep)
		case <-time.After(time.Millisecond):
			for pid, s := range l.Snapshot().PIDs {
				if pid != pid0 && firstAnswer.IsZero() {
					firstAnswer = s.First
				}
				if pid != pid0 && time.Since(firstAnswer) > time.Second {
					target, trigger = pid, "after 1 s of answers (baton upgrade still waiting: a probation)"
				}
			}
		case <-c.ctx.Done():
			panic("no new generation")
		}
	}
	time.Sleep(5 * time.Millisecond)
	if target <= 0 {
		panic("no pid to kill")
	}
	must(syscall.Kill(target, syscall.SIGKILL), "kill")
	killAt := time.Now()
	if !returned {
		select {
		case rep = <-repc:
		case <-c.ctx.Done():
			panic("baton upgrade did not return")
		}
	}
	// Watch for 6 s: long enough for the old generation's drain to end
	// (idle grace 500 ms) or a probation of a few seconds.
	time.Sleep(6 * time.Second)
	pid1 := svc.Serving(c.ctx)
	serves := pid1 != 0 && pid1 != target && rig.Alive(pid1) && c.stillServes(l, pid1)
	r := l.Stop()
	dials, refused := p.Stop()
	who := "none"
	if pid1 != 0 {
		who = fmt.Sprintf("%d (%s)", pid1, r.PIDs[pid1].Version)
		if pid1 == pid0 {
			who += ", the old generation"
		}
	}
	who += lastOutcome(c)
	return Row{
		Observed: fmt.Sprintf("%s; new pid %d SIGKILLed 5 ms %s; refused connections %d of %d probes (dark %v); serving after: %s",
			repStr(rep), target, trigger, refused, dials, p.DarkFor().Round(time.Millisecond), who),
		Failed: rig.Failed(r) + since(r, killAt),
		// A SIGKILL cuts at most the request each of the 6 clients has in
		// flight on the killed process.
		Pass: refused == 0 && serves && countRefused(r) == 0 && r.TotalFailed() <= 6,
	}
}

// lastOutcome is what baton status says of the last upgrade.
func lastOutcome(c *C) string {
	st, err := c.svc.Status(c.ctx)
	if err != nil || st.Last == nil {
		return ""
	}
	if st.Last.OK {
		return "; status: last upgrade ok"
	}
	return "; status: last upgrade " + st.Last.Code
}

// since notes how many of the recorded failures came after t.
func since(r loadgen.Report, t time.Time) string {
	n := 0
	for _, f := range r.Failures {
		if f.At.After(t) {
			n++
		}
	}
	if n == 0 || n == len(r.Failures) {
		return ""
	}
	return fmt.Sprintf(" [%d of the first %d after the kill]", n, len(r.Failures))
}

// countRefused counts the load's recorded failures that were refused
// connections.
func countRefused(r loadgen.Report) int {
	n := 0
	for _, f := range r.Failures {
		if f.Phase == "dial" && strings.Contains(f.Err, "connection refused") {
			n++
		}
	}
	return n
}

func crashLoop(c *C) Row {
	svc := c.start(rig.Opts{Run: []string{"--restart-min", "100ms"}})
	l, pid0 := c.load(4, 2)
	p, err := rig.StartProber(svc.Addr)
	must(err, "prober")
	must(svc.Install(c.env.Bins["hello-crashloop"]), "install")
	rep := c.upgrade()
	// Back-offs 100 ms .. 1.6 s and 5 restarts before a give-up: 15 s is
	// past the give-up.
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && rig.Alive(svc.SupPID) {
		time.Sleep(50 * time.Millisecond)
	}
	supAlive := rig.Alive(svc.SupPID)
	pid1 := 0
	serves := false
	if supAlive {
		pid1 = svc.Serving(c.ctx)
		serves = pid1 != 0 && c.stillServes(l, pid1)
	}
	end := time.Now()
	r := l.Stop()
	dials, refused := p.Stop()
	ver := ""
	if pid1 != 0 {
		ver = r.PIDs[pid1].Version
	}
	crashes := 0
	for pid, s := range r.PIDs {
		if s.Version == "crashloop" && pid != pid0 {
			crashes++
		}
	}
	state := "supervisor gave up (exited)"
	if supAlive {
		state = fmt.Sprintf("supervisor alive, pid %d (%s) serves", pid1, ver) + lastOutcome(c)
	}
	return Row{
		Observed: fmt.Sprintf("upgrade %s; %d crash-looping generations answered; after 15 s: %s; refused connections %d of %d probes (dark %v)",
			repStr(rep), crashes, state, refused, dials, p.DarkFor().Round(time.Millisecond)),
		Failed: rig.Failed(r),
		// Each of the 6 crashing generations (--max-restarts 5, then the
		// fallback) cuts at most one request per client (6): none refused.
		Pass: supAlive && serves && ver == "v1" && refused == 0 && r.PIDs[pid1].Last.After(end.Add(-time.Second)) &&
			r.TotalFailed() <= 6*6 && countRefused(r) == 0,
	}
}

func refuseToExit(c *C) Row {
	o := rig.Opts{Hello: []string{"-drain-timeout", "2s", "-idle-grace", "200ms"}}
	if c.mode == rig.Run {
		o = rig.Opts{Run: []string{"--drain-timeout", "2s"}, Hello: []string{"-drain-timeout", "30s", "-idle-grace", "200ms"}}
	}
	svc := c.start(o)
	l, pid0 := c.load(4, 2)
	slow, err := loadgen.Start(c.ctx, loadgen.Config{Addr: svc.Addr, Workers: map[loadgen.Kind]int{loadgen.Slow: 1}, SlowMS: 30000, MaxRequests: 1, Timeout: 60 * time.Second})
	must(err, "slow load")
	// The 30 s request must be on the old generation before the upgrade;
	// nothing tells from outside when it was accepted.
	time.Sleep(500 * time.Millisecond)
	rep := c.upgrade()
	wctx, cancel := context.WithTimeout(c.ctx, 40*time.Second)
	ex, err := c.env.Tracker.WaitExit(wctx, pid0)
	cancel()
	gone := "still running after 40 s"
	var after time.Duration
	if err == nil {
		after = ex.At.Sub(rep.Returned)
		gone = fmt.Sprintf("gone %v after the handover", after.Round(10*time.Millisecond))
	}
	sr := slow.Stop()
	r := l.Stop()
	return Row{
		Observed: fmt.Sprintf("upgrade %s; old pid %d %s; the 30 s request: %d failed", repStr(rep), pid0, gone, sr.TotalFailed()),
		Failed:   rig.Failed(r) + fmt.Sprintf("; slow %d (cut, expected)", sr.TotalFailed()),
		Pass:     rep.OK && err == nil && after < 5*time.Second && sr.TotalFailed() == 1 && r.TotalFailed() == 0,
	}
}

func supervisorKill(c *C) Row {
	o := rig.Opts{Hello: []string{"-idle-grace", "5s"}}
	svc := c.start(o)
	l, pid0 := c.load(4, 2)
	rep := c.upgrade()
	if !rep.OK {
		panic("upgrade: " + repStr(rep))
	}
	pids := []int{pid0, rep.Result.PID} // the first still drains (5 s grace)
	p, err := rig.StartProber(svc.Addr)
	must(err, "prober")
	if svc.SupPID <= 0 {
		panic("no supervisor pid")
	}
	must(syscall.Kill(svc.SupPID, syscall.SIGKILL), "kill supervisor")
	killAt := time.Now()
	var slowest time.Duration
	allGone := true
	for _, pid := range pids {
		c.env.Tracker.Track(pid)
		wctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		ex, err := c.env.Tracker.WaitExit(wctx, pid)
		cancel()
		if err != nil {
			allGone = false
			continue
		}
		slowest = max(slowest, ex.At.Sub(killAt))
	}
	// How the port answers now.
	var dialErr error
	if conn, err := net.DialTimeout("tcp", svc.Addr, 2*time.Second); err == nil {
		conn.Close()
	} else {
		dialErr = err
	}
	r := l.Stop()
	p.Stop()
	var left []string
	ents, _ := os.ReadDir(c.env.RuntimeDir())
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), c.name+".") {
			left = append(left, e.Name())
		}
	}
	// The next baton run of the name sweeps what the killed one left.
	svc.Stop() // reaps; the supervisor is gone already
	c.svc = nil
	again := c.start(rig.Opts{})
	var stale []string
	for _, f := range left {
		if strings.Contains(f, ".gen2.") || strings.Contains(f, ".gen3.") {
			if _, err := os.Stat(filepath.Join(c.env.RuntimeDir(), f)); err == nil {
				stale = append(stale, f)
			}
		}
	}
	_ = again
	portSays := "accepts"
	if dialErr != nil {
		portSays = dialErr.Error()
		if i := strings.LastIndex(portSays, ": "); i >= 0 {
			portSays = portSays[i+2:]
		}
	}
	return Row{
		Observed: fmt.Sprintf("generations %v gone %v after the kill (all: %v); port then: %s; left in the runtime dir: %d files, %d of them still there after the next baton run",
			pids, slowest.Round(time.Millisecond), allGone, portSays, len(left), len(stale)),
		Failed: rig.Failed(r) + " (expected: nothing serves)",
		Pass:   allGone && slowest < 2*time.Second && errorsIsRefused(dialErr) && len(stale) == 0,
	}
}

func errorsIsRefused(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection refused")
}

func upgradeStorm(c *C) Row {
	svc := c.start(rig.Opts{Hello: []string{"-idle-grace", "200ms"}})
	l, pid0 := c.load(4, 2)
	const n = 25
	outcomes := map[string]int{}
	last := pid0
	pids := []int{pid0}
	other := true
	for i := 0; i < n; i++ {
		v := "hello-v2"
		if i%2 == 1 {
			v = "hello-v1"
		}
		must(svc.Install(c.env.Bins[v]), "install")
		rep := c.upgrade()
		outcomes[repStr(rep)]++
		switch {
		case rep.OK:
			last = rep.Result.PID
			pids = append(pids, last)
		case rep.ExitCode == 4 && rep.Code == contract.CodeTooMany:
		default:
			other = false
		}
	}
	serves := c.stillServes(l, last)
	// Every generation but the last exits.
	wctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
	oldLeft := 0
	for _, pid := range pids[:len(pids)-1] {
		if _, err := c.env.Tracker.WaitExit(wctx, pid); err != nil {
			oldLeft++
		}
	}
	cancel()
	r := l.Stop()
	return Row{
		Observed: fmt.Sprintf("%d upgrades: %s; pid %d serves; old generations still running: %d", n, outcomeStr(outcomes), last, oldLeft),
		Failed:   rig.Failed(r),
		Pass:     other && outcomes["exit 0"] > 0 && serves && oldLeft == 0 && r.TotalFailed() == 0,
	}
}

func outcomeStr(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var out []string
	for _, k := range ks {
		out = append(out, fmt.Sprintf("%d× %s", m[k], k))
	}
	return strings.Join(out, ", ")
}

func concurrentUpgrades(c *C) Row {
	// A 1 s start-up: the five calls overlap with the one under way.
	svc := c.start(rig.Opts{Hello: []string{"-startup-delay", "1s"}})
	l, pid0 := c.load(4, 2)
	must(svc.Install(c.env.Bins["hello-v2"]), "install")
	const n = 5
	reps := make([]proctest.UpgradeReport, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[i] = c.upgrade()
		}()
	}
	wg.Wait()
	outcomes := map[string]int{}
	winner := 0
	for _, rep := range reps {
		outcomes[repStr(rep)]++
		if rep.OK {
			winner = rep.Result.PID
		}
	}
	serves := winner != 0 && c.stillServes(l, winner)
	r := l.Stop()
	return Row{
		Observed: fmt.Sprintf("%s; pid %d serves (was %d)", outcomeStr(outcomes), winner, pid0),
		Failed:   rig.Failed(r),
		Pass:     outcomes["exit 0"] == 1 && outcomes["exit 4 "+contract.CodeBusy] == n-1 && serves && r.TotalFailed() == 0,
	}
}

func diskFull(c *C) Row {
	fi, err := os.Stat(c.env.Bins["hello-v1"])
	must(err, "stat")
	dir := filepath.Join(c.env.Dir, "full-"+c.name)
	must(os.Mkdir(dir, 0o755), "mkdir")
	// Room for the installed binary and the service's log, not for the
	// copies an install makes.
	size := (fi.Size()+2<<20)/1024 + 1
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dk,mode=0755", size), "tmpfs", dir).CombinedOutput(); err != nil {
		panic(fmt.Sprintf("mount tmpfs: %v %s", err, out))
	}
	defer func() {
		if c.svc != nil {
			c.svc.Stop() // the binary on the tmpfs must not be busy
			c.svc = nil
		}
		if err := exec.Command("umount", dir).Run(); err != nil {
			exec.Command("umount", "-l", dir).Run()
		}
	}()
	svc := c.start(rig.Opts{Dir: dir})
	l, pid0 := c.load(4, 2)
	var st unix.Statfs_t
	unix.Statfs(dir, &st)
	free := int64(st.Bavail) * int64(st.Bsize)
	sha0 := fileSHA(svc.Installed)
	rep := c.upgrade("--binary", c.env.Bins["hello-v2"])
	serves := c.stillServes(l, pid0)
	r := l.Stop()
	pid1 := svc.Serving(c.ctx)
	same := fileSHA(svc.Installed) == sha0
	row := Row{
		Observed: fmt.Sprintf("tmpfs %d KiB, %d KiB free; %s; installed binary unchanged: %v; pid %d serves (was %d)", size, free>>10, repStr(rep), same, pid1, pid0),
		Failed:   rig.Failed(r),
		Pass:     rep.ExitCode == 1 && rep.Code == contract.CodeDiskSpace && same && pid1 == pid0 && serves && r.TotalFailed() == 0,
	}
	if !row.Pass {
		row.Log = svc.LogTail(2500)
	}
	return row
}

func descriptorLimit(c *C) Row {
	svc := c.start(rig.Opts{})
	// Keep-alive clients only: the service's descriptor count stays put.
	l, pid0 := c.load(4, 0)
	target := pid0
	who := "the service"
	if c.mode == rig.Run {
		target, who = svc.SupPID, "the supervisor"
	}
	n, err := proctest.CountFDs(target)
	must(err, "count fds")
	limit := n + 2 // the control connection, and not one more
	orig, err := exec.Command("prlimit", "--pid", strconv.Itoa(target), "--nofile", "--output", "SOFT,HARD", "--noheadings").Output()
	must(err, "prlimit read")
	f := strings.Fields(string(orig))
	if len(f) != 2 {
		panic(fmt.Sprintf("prlimit said %q", orig))
	}
	must(exec.Command("prlimit", "--pid", strconv.Itoa(target), fmt.Sprintf("--nofile=%d:%d", limit, limit)).Run(), "prlimit set")
	rep := c.upgrade()
	serves := c.stillServes(l, pid0)
	exec.Command("prlimit", "--pid", strconv.Itoa(target), "--nofile="+f[0]+":"+f[1]).Run()
	r := l.Stop()
	pid1 := svc.Serving(c.ctx)
	return Row{
		Observed: fmt.Sprintf("RLIMIT_NOFILE of %s (pid %d) set to %d (%d open); %s; pid %d serves (was %d)", who, target, limit, n, repStr(rep), pid1, pid0),
		Failed:   rig.Failed(r),
		Pass:     rep.ExitCode == 1 && rep.Code == contract.CodeResources && pid1 == pid0 && serves && r.TotalFailed() == 0,
	}
}

func foreignUser(c *C) Row {
	svc := c.start(rig.Opts{})
	l, pid0 := c.load(4, 2)
	// The CLI where user nobody may run it, and every directory on the
	// way to the control socket loosened: only the credential check stands.
	pub, err := os.MkdirTemp("", "bflt-nobody")
	must(err, "mkdtemp")
	defer os.RemoveAll(pub)
	must(os.Chmod(pub, 0o755), "chmod")
	cli := filepath.Join(pub, "baton")
	must(rig.CopyFile(c.env.Bins["baton"], cli), "copy cli")
	rt := c.env.RuntimeDir()
	sock := filepath.Join(rt, c.name+".sock")
	restore := loosen(map[string]os.FileMode{c.env.Dir: 0o755, rt: 0o755, sock: 0o777})
	cmd := exec.CommandContext(c.ctx, cli, "upgrade", "--name", c.name, "--json")
	cmd.Env = []string{contract.EnvRuntimeDir + "=" + rt, "PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	restore()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		panic(err)
	}
	var jr struct {
		Code  string `json:"code"`
		Error string `json:"error"`
	}
	jsonDecode(out.Bytes(), &jr)
	serves := c.stillServes(l, pid0)
	r := l.Stop()
	pid1 := svc.Serving(c.ctx)
	st, _ := svc.Status(c.ctx)
	upgraded := st.Last != nil
	why := jr.Error
	if len(why) > 90 {
		why = why[:90] + "..."
	}
	return Row{
		Observed: fmt.Sprintf("as uid 65534: exit %d %s (%q); an upgrade ran: %v; pid %d serves (was %d)", code, jr.Code, why, upgraded, pid1, pid0),
		Failed:   rig.Failed(r),
		Pass:     code != 0 && (jr.Code == contract.CodeForbidden || jr.Code == contract.CodeUnreachable) && !upgraded && pid1 == pid0 && serves && r.TotalFailed() == 0,
	}
}

// loosen chmods each path and returns what puts the modes back.
func loosen(m map[string]os.FileMode) func() {
	old := map[string]os.FileMode{}
	for p, mode := range m {
		if fi, err := os.Stat(p); err == nil {
			old[p] = fi.Mode().Perm()
			os.Chmod(p, mode)
		}
	}
	return func() {
		for p, mode := range old {
			os.Chmod(p, mode)
		}
	}
}

func oversizedState(c *C) Row {
	// 3 MiB of NUL bytes, 18 MiB as JSON: over the 16 MiB default bound.
	svc := c.start(rig.Opts{Hello: []string{"-state-pad", strconv.Itoa(3 << 20)}})
	l, pid0 := c.load(4, 2)
	rep := c.upgrade()
	serves := c.stillServes(l, pid0)
	r := l.Stop()
	pid1 := svc.Serving(c.ctx)
	return Row{
		Observed: fmt.Sprintf("%s (%s); pid %d serves (was %d)", repStr(rep), short(rep.Error), pid1, pid0),
		Failed:   rig.Failed(r),
		Pass:     rep.ExitCode == 1 && rep.Code == contract.CodeState && pid1 == pid0 && serves && r.TotalFailed() == 0,
	}
}

func short(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return s
}

func unreadableState(c *C) Row {
	svc := c.start(rig.Opts{Bin: c.env.Bins["badstate"]})
	l, pid0 := c.load(4, 2)
	must(svc.Install(c.env.Bins["hello-v1"]), "install")
	rep := c.upgrade()
	serves := c.stillServes(l, pid0)
	r := l.Stop()
	pid1 := svc.Serving(c.ctx)
	said := ""
	if rep.ChildExit != nil {
		for _, line := range strings.Split(rep.ChildExit.StderrTail, "\n") {
			if strings.Contains(line, "state") {
				said = short(line)
			}
		}
	}
	return Row{
		Observed: fmt.Sprintf("%s (%q); pid %d (%s) serves (was %d)", repStr(rep), said, pid1, r.PIDs[pid1].Version, pid0),
		Failed:   rig.Failed(r),
		Pass:     rep.ExitCode == 1 && rep.Code == contract.CodeChildExited && strings.Contains(said, "unreadable") && pid1 == pid0 && serves && r.TotalFailed() == 0,
	}
}

// corruptStateInTransit plays the parent of a real hello: a handoff
// whose state blob does not match its sha256.
func corruptStateInTransit(c *C) Row {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	must(err, "socketpair")
	ours := os.NewFile(uintptr(pair[0]), "parent-end")
	theirs := os.NewFile(uintptr(pair[1]), "child-end")
	conn, err := net.FileConn(ours)
	ours.Close()
	must(err, "fileconn")
	defer conn.Close()
	addr, err := rig.FreeAddr()
	must(err, "addr")
	var stderr bytes.Buffer
	cmd := exec.Command(c.env.Bins["hello-v1"], "-name", "", "-addr", addr)
	cmd.Env = append(os.Environ(), handoff.EnvChannel+"=3")
	cmd.ExtraFiles = []*os.File{theirs, os.Stderr}
	cmd.Stderr = &stderr
	must(cmd.Start(), "start hello")
	theirs.Close()
	c.env.Tracker.Track(cmd.Process.Pid)
	var msg bytes.Buffer
	must(handoff.WriteHandoff(&msg, handoff.Handoff{Generation: 2}, []byte(`{"served":41}`)), "write handoff")
	b := msg.Bytes()
	b[len(b)-3] ^= 0xff // a byte of the blob
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	_, err = conn.Write(b)
	must(err, "write")
	conn.(*net.UnixConn).CloseWrite()
	reply, rerr := handoff.ReadReply(conn)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := true
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		exited = false
	}
	code := cmd.ProcessState.ExitCode()
	return Row{
		Observed: fmt.Sprintf("reply %s code %s (%s), read error %v; hello exited %v with code %d", reply.Type, reply.Code, short(reply.Reason), rerr, exited, code),
		Failed:   "n/a (no service: the child alone)",
		Pass:     rerr == nil && reply.Type == "refused" && reply.Code == contract.CodeState && strings.Contains(reply.Reason, "sha256") && exited && code != 0,
	}
}

func clockJump(c *C) Row {
	if _, err := exec.LookPath("unshare"); err != nil {
		return Row{Observed: "unshare not found: " + err.Error(), Failed: "-"}
	}
	const year = "31536000"
	// Library: the first generation in the namespace (its successors are
	// its children); baton run: the supervisor (its generations too).
	o := rig.Opts{
		Hello: []string{"-ready-timeout", "2s"},
		Wrap:  []string{"unshare", "--time", "--fork", "--monotonic", year, "--boottime", year, "--"},
	}
	if c.mode == rig.Run {
		o.Run = []string{"--ready-timeout", "2s"}
	}
	svc := c.start(o)
	l, pid0 := c.load(4, 2)
	// The clock that times the ready timeout really is a year ahead of ours.
	timer := pid0
	if c.mode == rig.Run {
		var st contract.Status
		resp, err := ctl.Do(c.ctx, c.name, ctl.Request{Op: ctl.OpStatus})
		must(err, "status")
		must(resp.Decode(&st), "status")
		if st.Supervisor == nil || st.Supervisor.PID <= 0 {
			panic("status names no supervisor")
		}
		timer = st.Supervisor.PID
	}
	offset := monotonicOffset(timer)
	must(svc.Install(c.env.Bins["hello-hang"]), "install")
	rep := c.upgrade()
	took := rep.Returned.Sub(rep.Triggered)
	must(svc.Install(c.env.Bins["hello-v2"]), "install")
	rep2 := c.upgrade()
	pid1 := svc.Serving(c.ctx)
	serves := pid1 != 0 && c.stillServes(l, pid1)
	r := l.Stop()
	return Row{
		Observed: fmt.Sprintf("monotonic offset of pid %d (%s) %s; hang: %s after %v; then %s, pid %d (%s) serves",
			timer, map[bool]string{true: "the supervisor", false: "the service"}[timer != pid0], offset, repStr(rep), took.Round(100*time.Millisecond), repStr(rep2), pid1, r.PIDs[pid1].Version),
		Failed: rig.Failed(r),
		Pass: rep.ExitCode == 1 && rep.Code == contract.CodeReadyTimeout && took > 1500*time.Millisecond && took < 8*time.Second &&
			rep2.OK && serves && r.TotalFailed() == 0 && strings.HasPrefix(offset, "+"+year),
	}
}

// monotonicOffset reads the time namespace offset of pid's process.
func monotonicOffset(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/timens_offsets")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "monotonic" {
			return "+" + f[1] + " s"
		}
	}
	return "none"
}

func jsonDecode(b []byte, v any) { _ = json.Unmarshal(b, v) }
