//go:build unix

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proctest"
)

const drainTimeout = 10 * time.Second

// mixedLoad starts the mixed load of the acceptance criteria on a TCP
// address, a second one on a unix socket, and a UDP prober.
type mixedLoad struct {
	tcp, unix *loadgen.Load
	udp       *loadgen.UDPLoad
}

func startMixedLoad(t *testing.T, ctx context.Context, tcpAddr, unixPath, udpAddr string) *mixedLoad {
	t.Helper()
	m := &mixedLoad{}
	var err error
	m.tcp, err = loadgen.Start(ctx, loadgen.Config{Addr: tcpAddr, Workers: map[loadgen.Kind]int{
		loadgen.KeepAliveGET: 4, loadgen.KeepAlivePOST: 4, loadgen.Fresh: 4, loadgen.Slow: 3,
	}, MaxRequests: 2_000_000})
	if err != nil {
		t.Fatal(err)
	}
	if unixPath != "" {
		m.unix, err = loadgen.Start(ctx, loadgen.Config{Network: "unix", Addr: unixPath, Workers: map[loadgen.Kind]int{
			loadgen.KeepAlivePOST: 2, loadgen.Fresh: 1,
		}, MaxRequests: 1_000_000})
		if err != nil {
			t.Fatal(err)
		}
	}
	if udpAddr != "" {
		m.udp, err = loadgen.StartUDP(ctx, loadgen.UDPConfig{Addr: udpAddr, MaxProbes: 200_000})
		if err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// stopAndCheck stops the load and fails the test on any failed request.
func (m *mixedLoad) stopAndCheck(t *testing.T) loadgen.Report {
	t.Helper()
	rep := m.tcp.Stop()
	t.Logf("tcp load:\n%s", rep)
	check := func(what string, r loadgen.Report) {
		for kind, ks := range r.ByKind {
			if ks.OK == 0 {
				t.Errorf("%s %s: no successful request at all", what, kind)
			}
			if ks.Failed != 0 {
				t.Errorf("%s %s: %d failed requests", what, kind, ks.Failed)
			}
		}
		for i, f := range r.Failures {
			if i == 10 {
				break
			}
			t.Errorf("%s failure: %+v", what, f)
		}
	}
	check("tcp", rep)
	if m.unix != nil {
		ur := m.unix.Stop()
		t.Logf("unix socket load:\n%s", ur)
		check("unix", ur)
	}
	if m.udp != nil {
		ur := m.udp.Stop()
		t.Logf("udp: %s", ur)
		if ur.OK == 0 || ur.Failed != 0 {
			t.Errorf("udp: %d ok, %d failed (want >0 ok, 0 failed): %v", ur.OK, ur.Failed, ur.Failures)
		}
		if len(ur.PIDs) < 2 {
			t.Errorf("udp answers came from %d generation(s), want several", len(ur.PIDs))
		}
	}
	return rep
}

// TestUpgradesUnderLoad is the core guarantee: 20 upgrades, 2 per second,
// through `baton upgrade`, under keep-alive GET, non-retried POST, a fresh
// connection per request and 1.5 s slow requests, over TCP and a unix
// socket, plus UDP: no request fails, every upgrade switches, every old
// generation exits within its drain deadline, fds do not grow.
func TestUpgradesUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end load test")
	}
	addr := freeAddr(t, "tcp")
	udpAddr := freeAddr(t, "udp")
	unixPath := filepath.Join(workDir, "hello-load.sock")
	svc, bin := startHello(t, "load", "-addr", addr, "-unix", unixPath, "-udp", udpAddr,
		"-idle-grace", "1s", "-drain-timeout", drainTimeout.String())

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	firstPID := st.PID
	fdsBefore, fdErr := proctest.CountFDs(firstPID)
	fdsBeforeList := fdTargets(firstPID)

	load := startMixedLoad(t, ctx, addr, unixPath, udpAddr)
	waitResponses(t, load.tcp, firstPID, 100)

	const upgrades = 20
	type handover struct {
		oldPID, newPID int
		at             time.Time
		switchTime     time.Duration
	}
	var handovers []handover
	current := firstPID
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < upgrades; i++ {
		<-tick.C
		// Alternate releases on disk: an upgrade starts what is there now.
		want := []string{"v2", "v1"}[i%2]
		installCopy(t, bins[map[string]string{"v1": "hello", "v2": "hello-v2"}[want]], bin)
		rep, err := svc.Upgrade(ctx)
		if err != nil {
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		if rep.ExitCode != 0 || !rep.OK || rep.Result == nil {
			t.Fatalf("upgrade %d: exit %d, %s: %s %s", i+1, rep.ExitCode, rep.Code, rep.Error, rep.Stderr)
		}
		seen, err := load.tcp.WaitPID(ctx, rep.Result.PID)
		if err != nil {
			t.Fatalf("upgrade %d: no response from the new pid %d: %v", i+1, rep.Result.PID, err)
		}
		if v := load.tcp.Snapshot().PIDs[rep.Result.PID].Version; v != want {
			t.Errorf("upgrade %d: new pid serves version %q, want %q (the binary on disk)", i+1, v, want)
		}
		handovers = append(handovers, handover{oldPID: current, newPID: rep.Result.PID, at: rep.Returned, switchTime: seen.Sub(rep.Triggered)})
		current = rep.Result.PID
	}
	waitResponses(t, load.tcp, current, 200) // the last generation serves a while too
	report := load.stopAndCheck(t)

	// Every generation answered requests.
	for _, h := range handovers {
		if report.PIDs[h.newPID].Responses == 0 {
			t.Errorf("generation pid %d never answered", h.newPID)
		}
	}
	// Every old generation exited within its drain deadline and was reaped.
	var exits, switches []time.Duration
	for _, h := range handovers {
		wctx, wcancel := context.WithTimeout(ctx, drainTimeout+5*time.Second)
		ex, err := tracker.WaitExit(wctx, h.oldPID)
		wcancel()
		if err != nil {
			t.Errorf("old generation %d did not exit: %v", h.oldPID, err)
			continue
		}
		took := ex.At.Sub(h.at)
		exits = append(exits, took)
		switches = append(switches, h.switchTime)
		if took > drainTimeout+2*time.Second {
			t.Errorf("old generation %d exited %v after the handover (drain deadline %v)", h.oldPID, took, drainTimeout)
		}
		if proctest.IsZombie(h.oldPID) {
			t.Errorf("old generation %d is a zombie", h.oldPID)
		}
	}
	t.Logf("switch time (trigger -> first response from new pid): %s", durStats(switches))
	t.Logf("old generation exit after handover: %s", durStats(exits))

	// No fd growth: the last generation, idle, holds what the first held idle.
	if fdErr == nil {
		var fdsAfter int
		pollUntil(5*time.Second, func() bool { // load connections close asynchronously
			fdsAfter, _ = proctest.CountFDs(current)
			return fdsAfter <= fdsBefore
		})
		t.Logf("open fds: generation 1 %d, generation %d %d", fdsBefore, upgrades+1, fdsAfter)
		if fdsAfter > fdsBefore {
			t.Errorf("fd count grew across generations: %d -> %d\ngeneration 1: %s\ngeneration %d: %s", fdsBefore, fdsAfter, fdsBeforeList, upgrades+1, fdTargets(current))
		}
	}
}

// fdTargets lists what pid's open descriptors point at (Linux), for a
// failure message.
func fdTargets(pid int) string {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		out = append(out, e.Name()+"->"+target)
	}
	return strings.Join(out, " ")
}

func durStats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return "median " + s[len(s)/2].Round(time.Millisecond).String() + ", max " + s[len(s)-1].Round(time.Millisecond).String()
}
