//go:build unix

package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proctest"
)

// A new release that uses baton but fails before Ready (and stops its
// upgrader on the way out) must not remove the serving generation's control
// socket or unix socket file.
func TestBrokenReleaseLeavesParentFilesAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	sock := filepath.Join(workDir, "broken.sock")
	svc, bin := startHello(t, "broken", "-addr", addr, "-unix", sock)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	installCopy(t, bins["hello-broken"], bin)
	rep, err := svc.Upgrade(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Code != "child_exited" || rep.ChildExit == nil || !strings.Contains(rep.ChildExit.StderrTail, "database_url_missing") {
		t.Fatalf("upgrade to a broken release: %+v", rep)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the unix socket file of the serving generation was removed: %v", err)
	}
	st, err := svc.Status(ctx)
	if err != nil || st.Phase != "serving" {
		t.Fatalf("control endpoint after the broken release: %v %+v", err, st)
	}
	l, err := loadgen.Start(ctx, loadgen.Config{Network: "unix", Addr: sock, Workers: map[loadgen.Kind]int{loadgen.Fresh: 1}, MaxRequests: 20})
	if err != nil {
		t.Fatal(err)
	}
	<-l.Done()
	if r := l.Stop(); r.TotalFailed() != 0 || r.TotalOK() != 20 {
		t.Fatalf("unix socket after the broken release: %s", r)
	}
}

// If the old generation dies (SIGKILL) while the new one is still starting
// and writing to its stderr, the new one must not die of SIGPIPE: it takes
// over and serves.
func TestParentKilledDuringStartup(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	events := filepath.Join(t.TempDir(), "events.log")
	svc, _ := startHello(t, "orphan", "-addr", addr, "-startup-delay", "1s", "-event-log", events)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go svc.Upgrade(ctx) // its caller loses the answer: the parent is killed
	// Generation 2 writes "starting" to the event log before its start-up
	// work and "ready" after it: the parent is killed in between.
	gen2 := func(event string) bool {
		b, _ := os.ReadFile(events)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "generation 2 pid ") && strings.HasSuffix(line, " "+event) {
				return true
			}
		}
		return false
	}
	waitFor(t, 30*time.Second, "generation 2 starting", func() bool { return gen2("starting") })
	if err := signalPID(t, st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if gen2("ready") {
		t.Fatal("generation 2 was ready before its parent was killed: the test proves nothing (raise -startup-delay)")
	}
	// The child logs after its start-up work (stderr is still the pipe to
	// the dead parent), then gets ready and serves.
	waitFor(t, 30*time.Second, "a generation taking over after the parent was killed", func() bool {
		st2, err := svc.Status(ctx)
		if err == nil && st2.PID != st.PID && st2.Phase == "serving" {
			tracker.Track(st2.PID)
			return true
		}
		return false
	})
	l, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{loadgen.Fresh: 1}, MaxRequests: 20})
	if err != nil {
		t.Fatal(err)
	}
	<-l.Done()
	if r := l.Stop(); r.TotalFailed() != 0 || r.TotalOK() != 20 {
		t.Fatalf("after the takeover: %s", r)
	}
}

// SIGTERM to the serving generation during an upgrade cancels the upgrade:
// the new process is killed, the caller is told, nothing is left running.
func TestStopDuringUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	svc, bin := startHello(t, "stopping", "-addr", addr, "-ready-timeout", "20s")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	installCopy(t, bins["badapp-hang"], bin)
	var wg sync.WaitGroup
	var rep proctest.UpgradeReport
	wg.Add(1)
	go func() { defer wg.Done(); rep, _ = svc.Upgrade(ctx) }()
	waitPhase(t, ctx, svc, "upgrading")
	if err := signalPID(t, st.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if rep.ExitCode != exitFailed || rep.Code != "canceled" {
		t.Fatalf("upgrade interrupted by SIGTERM: exit %d code %q (%s)", rep.ExitCode, rep.Code, rep.Error)
	}
	assertKilled(t, rep.Error)
	if _, err := tracker.WaitExit(ctx, st.PID); err != nil {
		t.Fatal(err)
	}
}

// A deployment that switches a symlink is picked up: the upgrade starts the
// path the service was started as, not the file it resolved to.
func TestSymlinkSwitchDeploy(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir := t.TempDir()
	for _, v := range []string{"v1", "v2"} {
		os.Mkdir(filepath.Join(dir, v), 0o755)
	}
	installCopy(t, bins["hello"], filepath.Join(dir, "v1", "hello"))
	installCopy(t, bins["hello-v2"], filepath.Join(dir, "v2", "hello"))
	current := filepath.Join(dir, "current")
	if err := os.Symlink("v1", current); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t, "tcp")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	svc, err := proctest.Start(ctx, tracker, bins["baton"], "symlink", os.Environ(), nil, filepath.Join(current, "hello"), "-name", "symlink", "-addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopService(t, svc) })
	tmp := filepath.Join(dir, "current.new")
	os.Symlink("v2", tmp)
	if err := os.Rename(tmp, current); err != nil {
		t.Fatal(err)
	}
	rep, err := svc.Upgrade(ctx)
	if err != nil || !rep.OK {
		t.Fatalf("upgrade: %v %+v", err, rep)
	}
	l, _ := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{loadgen.Fresh: 1}, MaxRequests: 5})
	<-l.Done()
	r := l.Stop()
	if v := r.PIDs[rep.Result.PID].Version; v != "v2" {
		t.Fatalf("after switching the symlink to v2, the new generation serves %q", v)
	}
}

// waitPhase waits until the service's status says phase.
func waitPhase(t *testing.T, ctx context.Context, svc *proctest.Service, phase string) {
	t.Helper()
	waitFor(t, 30*time.Second, "phase "+phase, func() bool {
		st, err := svc.Status(ctx)
		return err == nil && st.Phase == phase
	})
}

// A named file (here an event log) is opened once and inherited by every
// later generation, and the state blob (the served-requests counter)
// travels from generation to generation.
func TestInheritedFileAndState(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	logPath := filepath.Join(t.TempDir(), "events.log")
	svc, _ := startHello(t, "files", "-addr", addr, "-event-log", logPath)
	checkFileAndStateTravel(t, svc, addr, logPath)
}

func checkFileAndStateTravel(t *testing.T, svc *proctest.Service, addr, logPath string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Rotate the path away: generations that inherit the open file keep
	// writing to the rotated file; one that reopened the path would not.
	rotated := logPath + ".1"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	var pids []int
	var served int
	for i := 0; i < 3; i++ {
		l, _ := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{loadgen.Fresh: 1}, MaxRequests: 10})
		<-l.Done()
		if r := l.Stop(); r.TotalOK() != 10 {
			t.Fatalf("load: %s", r)
		}
		served += 10
		rep, err := svc.Upgrade(ctx)
		if err != nil || !rep.OK {
			t.Fatalf("upgrade: %v %+v", err, rep)
		}
		pids = append(pids, rep.Result.PID)
	}
	if _, err := os.Stat(logPath); !os.IsNotExist(err) {
		t.Fatalf("a later generation reopened the event log by path instead of inheriting it (%v)", err)
	}
	b, err := os.ReadFile(rotated)
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if !strings.Contains(string(b), fmt.Sprintf("pid %d version", pid) /* written before Ready */) {
			t.Errorf("generation pid %d did not write to the inherited file:\n%s", pid, b)
		}
	}
	// The counter handed over as state: the last generation knows about
	// the requests served by the first ones.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	body, _ := io.ReadAll(c)
	var got int
	if i := strings.Index(string(body), "served "); i < 0 {
		t.Fatalf("no counter in %q", body)
	} else {
		fmt.Sscan(string(body[i+len("served "):]), &got)
	}
	if got < served {
		t.Fatalf("generation 4 counts %d served requests, want at least %d: the state did not travel", got, served)
	}
}

// `baton upgrade --binary F` installs F (the running binary renamed aside,
// the new one renamed into place) and upgrades; when the upgrade fails the
// previous binary is put back, byte for byte.
func TestUpgradeWithBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	svc, bin := startHello(t, "withbin", "-addr", addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := svc.Upgrade(ctx, "--binary", bins["hello-v2"])
	if err != nil || !rep.OK {
		t.Fatalf("upgrade --binary v2: %v %+v", err, rep)
	}
	l, _ := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{loadgen.Fresh: 1}, MaxRequests: 3})
	<-l.Done()
	if v := l.Stop().PIDs[rep.Result.PID].Version; v != "v2" {
		t.Fatalf("after --binary v2 the new generation serves %q", v)
	}
	before := sha(t, bin)
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rep, err = svc.Upgrade(ctx, "--binary", bins["badapp-exit"])
	if err != nil || rep.OK || rep.Code != "child_exited" || rep.ExitCode != exitFailed {
		t.Fatalf("upgrade --binary badapp: %v %+v", err, rep)
	}
	if after := sha(t, bin); after != before {
		t.Fatal("the installed binary was not put back after the failed upgrade")
	}
	if _, err := os.Stat(bin + ".old-" + strconv.Itoa(st.PID)); err == nil {
		t.Fatal("a copy renamed aside was left behind after restoring")
	}
}

func sha(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}
