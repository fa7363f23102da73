//go:build linux

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proctest"
)

// TestSupervisorRestoresInstalledRelease: when no CLI waits for the
// upgrade (baton install, then SIGHUP), the supervisor itself puts the
// serving release back at the installed path after a probation failure;
// and `baton rollback` leaves the installed path holding the release that
// runs again.
func TestSupervisorRestoresInstalledRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir := t.TempDir()
	app := filepath.Join(dir, "hello")
	installCopy(t, bins["hello"], app)
	v1 := fileSHA(t, app)
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "strestore", os.Environ(), "--listen", "tcp://"+addr, "--probation", "2s",
		"--", app, "-addr", addr, "-idle-grace", "300ms")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{
		loadgen.KeepAliveGET: 2, loadgen.KeepAlivePOST: 2, loadgen.Fresh: 2}, MaxRequests: 2_000_000})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	waitInstalled := func(want, what string) {
		t.Helper()
		waitFor(t, 20*time.Second, what+": the installed binary is "+want, func() bool { return fileSHA(t, app) == want })
	}

	// A release that exits before it is ready, installed on disk only, then
	// started by SIGHUP: it fails; the supervisor restores v1 on disk.
	if code, out, errOut := batonRun(ctx, t, "install", "--name", "strestore", "--force", bins["hello-broken"]); code != 0 {
		t.Fatalf("baton install: exit %d\n%s%s", code, out, errOut)
	}
	if fileSHA(t, app) == v1 {
		_, out, errOut := batonRun(ctx, t, "releases", "--name", "strestore")
		t.Fatalf("baton install did not switch the installed binary\n%s%s", out, errOut)
	}
	if err := svc.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitInstalled(v1, "after a failed upgrade by SIGHUP")
	if code, out, _ := batonRun(ctx, t, "releases", "--name", "strestore"); code != 0 || !strings.Contains(out, "failed (an upgrade to it was rolled back)") {
		t.Errorf("baton releases after the failed start: exit %d, the release that failed is not marked:\n%s", code, out)
	}

	// v2 through upgrade --binary, then `baton rollback`: v1 serves again
	// and is the installed binary again.
	code, rep, errOut := upgradeBinary(ctx, t, "strestore", bins["hello-v2"])
	if code != 0 || !rep.OK {
		t.Fatalf("upgrade --binary v2: exit %d %+v %s", code, rep, errOut)
	}
	v2 := fileSHA(t, app)
	if v2 == v1 {
		t.Fatal("upgrade --binary did not install v2")
	}
	if code, out := runCLI("rollback", "--name", "strestore"); code != 0 {
		t.Fatalf("baton rollback: exit %d: %s", code, out)
	}
	waitInstalled(v1, "after baton rollback")
	checkServesAfterRollback(ctx, t, svc, load, "v1")
}

// TestLibraryRollbackThroughReleases: a library service (no supervisor)
// upgraded with upgrade --binary is rolled back by `baton rollback`: the
// previous release is installed again and serves, under load, 0 failed.
func TestLibraryRollbackThroughReleases(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	svc, app := startHello(t, "librollback", "-addr", addr)
	v1 := fileSHA(t, app)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{
		loadgen.KeepAliveGET: 2, loadgen.KeepAlivePOST: 2, loadgen.Fresh: 2}, MaxRequests: 2_000_000})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	// Without a releases directory there is nothing to go back to.
	if code, out := runCLI("rollback", "--name", "librollback"); code != exitFailed || !strings.Contains(out, "no previous release to go back to") {
		t.Fatalf("rollback before any install: exit %d: %s", code, out)
	}
	code, rep, errOut := upgradeBinary(ctx, t, "librollback", bins["hello-v2"])
	if code != 0 || !rep.OK {
		t.Fatalf("upgrade --binary v2: exit %d %+v %s", code, rep, errOut)
	}
	tracker.Track(rep.Result.PID)
	if code, out := runCLI("rollback", "--name", "librollback"); code != 0 || !strings.Contains(out, "rolled back") {
		t.Fatalf("baton rollback: exit %d: %s", code, out)
	}
	if got := fileSHA(t, app); got != v1 {
		t.Fatalf("installed binary after rollback: %s, want v1 %s", got, v1)
	}
	checkServesAfterRollback(ctx, t, svc, load, "v1")
}

// TestStagingProbationRollbackLosesNothing: baton install, then baton
// upgrade; the new release passes its readiness probe but fails its health
// probe during probation while it still serves: the supervisor starts the
// previous release again, drains the failed one and puts the previous
// release back at the installed path. Nothing crashed, so no request may
// fail.
func TestStagingProbationRollbackLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir := t.TempDir()
	app := filepath.Join(dir, "plain")
	installCopy(t, bins["plain"], app)
	good := fileSHA(t, app)
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "stsick", os.Environ(), "--listen", "tcp://"+addr,
		"--ready-http", "http://"+addr+"/healthz", "--probation", "4s", "--", app, "-idle-grace", "300ms")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{
		loadgen.KeepAliveGET: 2, loadgen.KeepAlivePOST: 2, loadgen.Fresh: 2, loadgen.Slow: 1}, MaxRequests: 2_000_000})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	if code, out, errOut := batonRun(ctx, t, "install", "--name", "stsick", bins["plain-sick"]); code != 0 {
		t.Fatalf("baton install: exit %d\n%s%s", code, out, errOut)
	}
	sick := fileSHA(t, app)
	if sick == good {
		t.Fatal("baton install did not switch the installed binary")
	}
	rep, err := svc.Upgrade(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.Code != "rolled_back" || rep.ExitCode != exitFailed {
		t.Fatalf("upgrade to a release failing its health probe in probation: %+v", rep)
	}
	if got := fileSHA(t, app); got != good {
		t.Fatalf("installed binary after the probation rollback: %s, want the previous release %s (the failed one is %s)", got, good, sick)
	}
	code, out, _ := batonRun(ctx, t, "releases", "--name", "stsick")
	if code != 0 || !strings.Contains(out, "failed (an upgrade to it was rolled back)") {
		t.Errorf("baton releases: exit %d, the failed release is not marked:\n%s", code, out)
	}
	t.Logf("baton releases:\n%s", out)
	st, err := svc.Status(ctx)
	if err != nil || st.Phase != "serving" {
		t.Fatalf("status after the rollback: %v %+v", err, st)
	}
	tracker.Track(st.PID)
	if _, err := load.WaitPID(ctx, st.PID); err != nil {
		t.Fatal(err)
	}
	// The failed generation drains under the load, then exits.
	var sickPID int
	for pid, p := range load.Snapshot().PIDs {
		if p.Version == "sick" {
			sickPID = pid
		}
	}
	if sickPID == 0 {
		t.Fatal("the failing release never served: the test did not test a rollback of a serving generation")
	}
	tracker.Track(sickPID)
	if _, err := tracker.WaitExit(ctx, sickPID); err != nil {
		t.Fatalf("the failed generation did not finish its drain: %v", err)
	}
	waitResponses(t, load, st.PID, 100)
	r := load.Stop()
	if v := r.PIDs[st.PID].Version; v != "dev" {
		t.Errorf("after the rollback pid %d serves %q, want the previous release", st.PID, v)
	}
	if r.TotalFailed() != 0 {
		t.Errorf("%d requests failed:\n%s", r.TotalFailed(), r)
	}
	t.Logf("load: %d requests, 0 failed", r.TotalOK())
}

// checkServesAfterRollback waits until the serving generation answers the
// load, stops the load and checks that it runs version want and that no
// request failed.
func checkServesAfterRollback(ctx context.Context, t *testing.T, svc *proctest.Service, load *loadgen.Load, want string) {
	t.Helper()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tracker.Track(st.PID)
	if _, err := load.WaitPID(ctx, st.PID); err != nil {
		t.Fatal(err)
	}
	waitResponses(t, load, st.PID, 100)
	r := load.Stop()
	if v := r.PIDs[st.PID].Version; v != want {
		t.Errorf("after the rollback pid %d serves %q, want %s", st.PID, v, want)
	}
	if r.TotalFailed() != 0 {
		t.Errorf("%d requests failed:\n%s", r.TotalFailed(), r)
	}
}

// The library's own UpgradeTo (a control request carrying Binary, as older
// CLIs send): a release that fails to start is replaced by the previous
// binary, byte for byte, and one that works stays installed.
func TestLibraryUpgradeToPutsBinaryBack(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t, "tcp")
	_, app := startHello(t, "upgradeto", "-addr", addr)
	before := fileSHA(t, app)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := ctl.Do(ctx, "upgradeto", ctl.Request{Op: ctl.OpUpgrade, Binary: bins["hello-broken"]})
	if err != nil || resp.OK || resp.Code != ctl.CodeChildExited {
		t.Fatalf("upgrade to a broken binary: %v %+v", err, resp)
	}
	if got := fileSHA(t, app); got != before {
		t.Fatalf("the previous binary was not put back: %s, want %s", got, before)
	}
	if left, _ := filepath.Glob(app + ".old-*"); len(left) != 0 {
		t.Errorf("copies left aside after the restore: %v", left)
	}
	resp, err = ctl.Do(ctx, "upgradeto", ctl.Request{Op: ctl.OpUpgrade, Binary: bins["hello-v2"]})
	if err != nil || !resp.OK {
		t.Fatalf("upgrade to v2: %v %+v", err, resp)
	}
	if got, want := fileSHA(t, app), fileSHA(t, bins["hello-v2"]); got != want {
		t.Fatalf("v2 not installed: %s, want %s", got, want)
	}
}
