//go:build linux

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/testenv"
)

// eventsOf runs `baton events --name name --json` and decodes its lines.
func eventsOf(t *testing.T, name string) []events.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, out, errOut := batonRun(ctx, t, "events", "--name", name, "--json")
	if code != 0 {
		t.Fatalf("baton events --json: exit %d: %s", code, errOut)
	}
	return decodeEvents(t, out)
}

func decodeEvents(t *testing.T, out string) []events.Record {
	t.Helper()
	var recs []events.Record
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var r events.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil || r.Name == "" {
			t.Fatalf("baton events --json printed a line that is not a record: %v: %q", err, line)
		}
		recs = append(recs, r)
	}
	return recs
}

// eventsOnceRecorded polls `baton events --name name --json` until a
// record named what, of pid, is there, and returns them all.
func eventsOnceRecorded(t *testing.T, name, what string, pid int) []events.Record {
	t.Helper()
	var recs []events.Record
	waitFor(t, 30*time.Second, fmt.Sprintf("%s of pid %d recorded", what, pid), func() bool {
		recs = eventsOf(t, name)
		for _, r := range recs {
			if r.Name == what && r.PID == pid {
				return true
			}
		}
		return false
	})
	return recs
}

// opKinds lists the operations' kinds, space-separated, in order.
func opKinds(ops []operation) string {
	var kinds []string
	for _, o := range ops {
		kinds = append(kinds, o.op)
	}
	return strings.Join(kinds, " ")
}

// operation is one deployment's records, in order.
type operation struct {
	id, op string
	recs   []events.Record
}

func operations(recs []events.Record) []operation {
	idx := map[string]int{}
	var ops []operation
	for _, r := range recs {
		if r.Deployment == "" {
			continue
		}
		i, ok := idx[r.Deployment]
		if !ok {
			i = len(ops)
			idx[r.Deployment] = i
			ops = append(ops, operation{id: r.Deployment, op: r.Operation})
		}
		ops[i].recs = append(ops[i].recs, r)
	}
	return ops
}

// step finds the first record of o named name (and of pid, unless 0)
// after index from, or fails saying what the operation holds.
func (o operation) step(t *testing.T, from int, name string, pid int) (int, events.Record) {
	t.Helper()
	for i := from; i < len(o.recs); i++ {
		if r := o.recs[i]; r.Name == name && (pid == 0 || r.PID == pid) {
			return i, r
		}
	}
	t.Fatalf("%s %s: no %s of pid %d after step %d in:\n%s", o.op, o.id, name, pid, from, o)
	return 0, events.Record{}
}

func (o operation) String() string {
	var b strings.Builder
	for _, r := range o.recs {
		fmt.Fprintf(&b, "  %s %s gen %d pid %d %.6fs %s\n", r.Time.Format("15:04:05.000000"), r.Name, r.Generation, r.PID, r.Duration, r.ErrorType)
	}
	return b.String()
}

// checkUpgrade: an upgrade from pid old to pid new went through its steps
// in order, each with its duration: started, ready, took over, and the old
// generation drained.
func checkUpgrade(t *testing.T, o operation, old, new int) {
	t.Helper()
	i, _ := o.step(t, 0, events.UpgradeStarted, old)
	i, started := o.step(t, i, events.Started, new)
	i, ready := o.step(t, i, events.Ready, new)
	_, switched := o.step(t, i, events.Switched, new)
	_, drained := o.step(t, i, events.Drained, old)
	for _, r := range []events.Record{started, ready, switched, drained} {
		if r.Duration <= 0 {
			t.Errorf("%s of %s %s has no duration: %+v", r.Name, o.op, o.id, r)
		}
	}
}

// checkRollback: a rollback (baton rollback) from pid old to pid new went
// through its steps in order: the previous release started for the
// rollback, ready, took over, rolled back; the old generation drained;
// each step with its duration.
func checkRollback(t *testing.T, o operation, old, new int) {
	t.Helper()
	i, started := o.step(t, 0, events.Started, new)
	if started.Reason != "rollback" {
		t.Errorf("the rollback's generation was started for %q", started.Reason)
	}
	i, ready := o.step(t, i, events.Ready, new)
	i, switched := o.step(t, i, events.Switched, new)
	o.step(t, i, events.RolledBack, new)
	_, drained := o.step(t, 0, events.Drained, old)
	for _, r := range []events.Record{started, ready, switched, drained} {
		if r.Duration <= 0 {
			t.Errorf("%s of %s %s has no duration: %+v", r.Name, o.op, o.id, r)
		}
	}
}

func checkInOrder(t *testing.T, recs []events.Record) {
	t.Helper()
	for i := 1; i < len(recs); i++ {
		if recs[i].Time.Before(recs[i-1].Time) {
			t.Errorf("record %d (%s at %v) listed after %s at %v", i, recs[i].Name, recs[i].Time, recs[i-1].Name, recs[i-1].Time)
		}
	}
}

// follower is `baton events -f --json` running.
type follower struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan error
}

func startFollower(t *testing.T, name string) *follower {
	t.Helper()
	f := &follower{cmd: exec.Command(bins["baton"], "events", "--name", name, "-f", "--json"), done: make(chan error, 1)}
	stdout, err := f.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	f.cmd.Stderr = os.Stderr
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			f.mu.Lock()
			f.out.WriteString(sc.Text() + "\n")
			f.mu.Unlock()
		}
		f.done <- f.cmd.Wait()
	}()
	t.Cleanup(func() {
		if f.cmd.ProcessState == nil {
			signalEach(os.Kill, f.cmd.Process.Pid)
		}
	})
	return f
}

func (f *follower) text() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.out.String()
}

// stop interrupts it (what Ctrl-C does) and returns what it printed.
func (f *follower) stop(t *testing.T) []events.Record {
	t.Helper()
	if err := signalPID(t, f.cmd.Process.Pid, os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-f.done:
		if err != nil {
			t.Errorf("baton events -f, interrupted: %v (want exit 0)", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("baton events -f did not end when interrupted")
	}
	return decodeEvents(t, f.text())
}

// TestEventsOfSupervisedService: a `baton run` service upgraded three
// times, rolled back, upgraded again: `baton events --json` lists every
// step in order with its duration, `baton events -f` printed each one as
// it happened (exactly once), and a name without events is exit 3 naming
// the file looked for.
func TestEventsOfSupervisedService(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "evsup", os.Environ(), "--listen", "tcp://"+addr,
		"--", bins["hello"], "-addr", addr, "-idle-grace", "100ms")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fol := startFollower(t, "evsup")
	// It printed what was there (the start) before following.
	waitFor(t, 30*time.Second, "baton events -f printing the start", func() bool {
		return strings.Contains(fol.text(), `"event.name":"baton.serving"`)
	})

	pids := []int{st.PID}
	for i := 0; i < 3; i++ {
		rep, err := svc.Upgrade(ctx)
		if err != nil || !rep.OK {
			t.Fatalf("upgrade %d: %v %+v", i+1, err, rep)
		}
		pids = append(pids, rep.Result.PID)
	}
	if code, out := runCLI("rollback", "--name", "evsup"); code != 0 {
		t.Fatalf("baton rollback: exit %d: %s", code, out)
	}
	st, err = svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pids = append(pids, st.PID)
	rep, err := svc.Upgrade(ctx)
	if err != nil || !rep.OK {
		t.Fatalf("upgrade after the rollback: %v %+v", err, rep)
	}
	pids = append(pids, rep.Result.PID)
	before := pids[len(pids)-2]
	recs := eventsOnceRecorded(t, "evsup", events.Drained, before)
	checkInOrder(t, recs)
	ops := operations(recs)
	if got := opKinds(ops); got != "start upgrade upgrade upgrade rollback upgrade" {
		t.Fatalf("operations %q, want start, 3 upgrades, a rollback, an upgrade", got)
	}
	for n, o := range ops[1:] {
		old, new := pids[n], pids[n+1]
		if o.op == "rollback" {
			checkRollback(t, o, old, new)
			continue
		}
		checkUpgrade(t, o, old, new)
	}

	// -f printed every record from the first upgrade on, once each.
	waitFor(t, 30*time.Second, "baton events -f printing the last drain", func() bool {
		return strings.Contains(fol.text(), fmt.Sprintf(`"event.name":"baton.drained","service.name":"evsup","deployment.id":%q`, ops[len(ops)-1].id))
	})
	followed := fol.stop(t)
	count := map[string]int{}
	for _, r := range followed {
		count[fmt.Sprint(r.Time.UnixNano(), r.Name, r.PID)]++
	}
	for _, o := range ops[1:] {
		for _, r := range o.recs {
			if n := count[fmt.Sprint(r.Time.UnixNano(), r.Name, r.PID)]; n != 1 {
				t.Errorf("baton events -f printed %s of pid %d (%s) %d times", r.Name, r.PID, o.op, n)
			}
		}
	}
	// The human table lists the same steps.
	code, out, _ := batonRun(ctx, t, "events", "--name", "evsup")
	if code != 0 || strings.Count(out, "switched") != 5 || !strings.Contains(out, "rolled_back") || !strings.Contains(out, "TOOK") {
		t.Errorf("baton events: exit %d:\n%s", code, out)
	}
	t.Logf("baton events --name evsup:\n%s", out)

	code, _, errOut := batonRun(ctx, t, "events", "--name", "evnosuch")
	if code != contract.ExitUnreachable || !strings.Contains(errOut, "evnosuch.jsonl") {
		t.Errorf("events of a service that never ran: exit %d (want %d): %s", code, contract.ExitUnreachable, errOut)
	}
}

// TestEventsOfLibraryService: hello stand-alone (the library) upgraded
// twice, then its third generation killed during its probation: the
// previous one starts its binary again. baton events lists the upgrades
// and the rollback, in order, with durations.
func TestEventsOfLibraryService(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	addr := freeAddr(t, "tcp")
	svc, _ := startHello(t, "evlib", "-addr", addr, "-idle-grace", "100ms")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pids := []int{st.PID}
	for i := 0; i < 3; i++ {
		rep, err := svc.Upgrade(ctx)
		if err != nil || !rep.OK {
			t.Fatalf("upgrade %d: %v %+v", i+1, err, rep)
		}
		pids = append(pids, rep.Result.PID)
	}
	dead := pids[3]
	if err := signalPID(t, dead, os.Kill); err != nil {
		t.Fatalf("killing the new generation: %v", err)
	}
	var rescued int
	waitFor(t, 30*time.Second, "a rescued generation serving", func() bool {
		st, err := svc.Status(ctx)
		if err != nil || st.PID == dead || st.PID == pids[2] || st.PID <= 0 {
			return false
		}
		rescued = st.PID
		return true
	})
	svc.Tracker.Track(rescued)
	var recs []events.Record
	waitFor(t, 30*time.Second, "the rollback and the drains recorded", func() bool {
		recs = eventsOf(t, "evlib")
		var rolled, drained bool
		for _, r := range recs {
			rolled = rolled || (r.Name == events.RolledBack && r.PID == rescued)
			drained = drained || (r.Name == events.Drained && r.PID == pids[2])
		}
		return rolled && drained
	})
	checkInOrder(t, recs)
	ops := operations(recs)
	if len(ops) != 3 {
		t.Fatalf("%d operations recorded, want 3 upgrades:\n%v", len(ops), ops)
	}
	for i, o := range ops[:2] {
		checkUpgrade(t, o, pids[i], pids[i+1])
	}
	o := ops[2]
	i, _ := o.step(t, 0, events.UpgradeStarted, pids[2])
	i, _ = o.step(t, i, events.Switched, dead)
	i, failed := o.step(t, i, events.ProbationFailed, dead)
	if failed.ErrorType == "" || failed.Duration <= 0 {
		t.Errorf("probation failure without error type or duration: %+v", failed)
	}
	i, started := o.step(t, i, events.Started, rescued)
	if started.Reason != "rollback" {
		t.Errorf("the rescue was started for %q", started.Reason)
	}
	i, _ = o.step(t, i, events.Ready, rescued)
	_, rolled := o.step(t, i, events.RolledBack, rescued)
	if rolled.Duration <= 0 {
		t.Errorf("the rollback has no duration: %+v", rolled)
	}
	t.Logf("the rolled back upgrade:\n%s", o)
}

// TestUpgradeProgress: `baton upgrade` on a terminal (under script(1)'s
// pty) prints the steps as they happen, with timings, from the events
// file: starting, ready, handed over, old drained, then the line it always
// printed; in a pipe it prints only that line, and with --json on a
// terminal only the JSON report.
func TestUpgradeProgress(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	script := testenv.Command(t, "script", "bsdutils")
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "progsup", os.Environ(), "--listen", "tcp://"+addr,
		"--", bins["hello"], "-addr", addr, "-idle-grace", "100ms")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := svc.Status(ctx); err != nil {
		t.Fatal(err)
	}

	// A pipe: the one line, as before.
	code, out, errOut := batonRun(ctx, t, "upgrade", "--name", "progsup")
	m := regexp.MustCompile(`^upgraded progsup: generation 2, pid (\d+), ready after [0-9.]+(µs|ms|s|m[0-9.]+s)\n$`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("baton upgrade in a pipe: exit %d, output %q (want the one line it always printed) %s", code, out, errOut)
	}
	gen2, _ := strconv.Atoi(m[1])
	svc.Tracker.Track(gen2)

	// A terminal.
	onTTY := func(args string) (int, string) {
		cmd := exec.CommandContext(ctx, script, "-qec", bins["baton"]+" "+args, "/dev/null")
		b, err := cmd.Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), strings.ReplaceAll(string(b), "\r\n", "\n")
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, strings.ReplaceAll(string(b), "\r\n", "\n")
	}
	code, out = onTTY("upgrade --name progsup")
	if code != 0 {
		t.Fatalf("baton upgrade on a terminal: exit %d:\n%s", code, out)
	}
	steps := []string{
		fmt.Sprintf(`upgrading progsup: generation 2 \(pid %d\) serves`, gen2),
		`\+\S+ +starting +generation 3 \(pid (\d+)\)`,
		`\+\S+ +ready +generation 3 \(pid \d+\), \S+ after its start`,
		`\+\S+ +handed over +to generation 3 \(pid \d+\) \(handover \S+\); the old generation drains`,
		fmt.Sprintf(`\+\S+ +old drained +generation 2 \(pid %d\) drained in \S+`, gen2),
		`upgraded progsup: generation 3, pid \d+, ready after \S+`,
	}
	rest := out
	for _, s := range steps {
		loc := regexp.MustCompile(`(?m)^\s*` + s + `$`).FindStringIndex(rest)
		if loc == nil {
			t.Fatalf("baton upgrade on a terminal: no line %q (in this order) in:\n%s", s, out)
		}
		rest = rest[loc[1]:]
	}
	t.Logf("baton upgrade on a terminal:\n%s", out)
	if s, err := svc.Status(ctx); err == nil && s.PID > 0 {
		svc.Tracker.Track(s.PID)
	}

	// --json on a terminal: the report only.
	code, out = onTTY("upgrade --name progsup --json")
	var rep struct {
		OK     bool `json:"ok"`
		Result struct {
			Generation int `json:"generation"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || !rep.OK || rep.Result.Generation != 4 {
		t.Fatalf("baton upgrade --json on a terminal: exit %d, %v: %q", code, err, out)
	}
}

// TestEventsSince: a record two hours old, planted in the events file as
// an earlier run would have left it, then a `baton run` service under the
// same name: `baton events --since 1h` lists the service's start and not
// the old record (table and --json), --since 3h and no --since list both.
func TestEventsSince(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	const name = "evsince"
	path := events.Path(os.Getenv(contract.EnvRuntimeDir), name)
	l, err := events.Open(path, name, "supervisor", 0)
	if err != nil {
		t.Fatal(err)
	}
	old := events.Record{Time: time.Now().Add(-2 * time.Hour), Name: events.Serving, Generation: 1, PID: 4242,
		Message: "an earlier run's generation 1 (pid 4242) serving"}
	if err := l.Emit(old); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, name, os.Environ(), "--listen", "tcp://"+addr,
		"--", bins["hello"], "-addr", addr, "-idle-grace", "100ms")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	servingOf := func(recs []events.Record, pid int) bool {
		for _, r := range recs {
			if r.Name == events.Serving && r.PID == pid {
				return true
			}
		}
		return false
	}
	waitFor(t, 30*time.Second, "the service's start recorded", func() bool { return servingOf(eventsOf(t, name), st.PID) })

	for _, c := range []struct {
		since   []string
		wantOld bool
	}{{nil, true}, {[]string{"--since", "3h"}, true}, {[]string{"--since", "1h"}, false}} {
		args := append([]string{"events", "--name", name, "--json"}, c.since...)
		code, out, errOut := batonRun(ctx, t, args...)
		if code != 0 {
			t.Fatalf("baton %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		recs := decodeEvents(t, out)
		if !servingOf(recs, st.PID) {
			t.Errorf("baton %s: the service's start (pid %d) is not listed:\n%s", strings.Join(args, " "), st.PID, out)
		}
		if got := servingOf(recs, old.PID); got != c.wantOld {
			t.Errorf("baton %s: the record of two hours ago listed: %v, want %v:\n%s", strings.Join(args, " "), got, c.wantOld, out)
		}
		checkInOrder(t, recs)
		if c.wantOld && (len(recs) == 0 || recs[0].PID != old.PID) {
			t.Errorf("baton %s: the oldest record is not listed first:\n%s", strings.Join(args, " "), out)
		}
	}
	code, out, errOut := batonRun(ctx, t, "events", "--name", name, "--since", "1h")
	if code != 0 || strings.Contains(out, "an earlier run") || !strings.Contains(out, strconv.Itoa(st.PID)) {
		t.Errorf("baton events --since 1h (table): exit %d, want the start of pid %d and not the old record:\n%s%s", code, st.PID, out, errOut)
	}
	code, _, errOut = batonRun(ctx, t, "events", "--name", name, "--since", "-1h")
	if code != contract.ExitUsage {
		t.Errorf("baton events --since -1h: exit %d, want %d: %s", code, contract.ExitUsage, errOut)
	}
}
