package release

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/windows"
)

// winTempDir: not t.TempDir, whose os.RemoveAll fails under Wine; the
// directory is removed on a best-effort basis.
func winTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "relwin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			os.RemoveAll(filepath.Join(d, e.Name()))
		}
		os.Remove(d)
	})
	return d
}

// selfCopies writes two copies of this test binary (a real PE for this
// system): the installed app and a candidate that differs by one byte.
func selfCopies(t *testing.T) (installed, candidate string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	dir := winTempDir(t)
	installed, candidate = filepath.Join(dir, "app.exe"), filepath.Join(dir, "cand.exe")
	if err := os.WriteFile(installed, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(candidate, append(b, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	return installed, candidate
}

// runInstalled starts the installed copy (it sleeps) and returns it.
func runInstalled(t *testing.T, path string) *exec.Cmd {
	t.Helper()
	var cmd *exec.Cmd
	var err error
	// Wine now and then fails to start an .exe just written ("Internal
	// error", once in the Windows lane): a second try starts it.
	for try := 0; try < 3; try++ {
		cmd = exec.Command(path)
		cmd.Env = append(os.Environ(), "RELEASE_TEST_CHILD=sleep")
		if err = cmd.Start(); err == nil || !isWine() {
			break
		}
		t.Logf("starting %s under Wine: %v; trying again", path, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// isWine reports whether we run under Wine (ntdll exports wine_get_version).
func isWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

// TestActivateRunningExe: a running .exe cannot be overwritten, but
// Activate renames it aside and installs the new one; the aside copy is
// removed once it no longer runs.
func TestActivateRunningExe(t *testing.T) {
	installed, candidate := selfCopies(t)
	child := runInstalled(t, installed)
	v1, _ := FileSHA256(installed)
	// What Activate avoids: writing over a running image fails.
	if f, err := os.OpenFile(installed, os.O_WRONLY, 0); err == nil {
		f.Close()
		t.Logf("note: the running image could be opened for writing here (Wine does not lock running images)")
	}
	st, err := Open(installed, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer st.Unlock()
	r, err := st.Stage(candidate, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Activate(r.ID); err != nil {
		t.Fatalf("activate over a running exe: %v", err)
	}
	if got, _ := FileSHA256(installed); got != r.SHA256 {
		t.Fatal("the new release is not installed")
	}
	aside, _ := filepath.Glob(installed + ".old-*")
	t.Logf("renamed aside while running: %v", aside)
	// Roll back while the old image still runs (from its aside name).
	back, done, err := st.RollbackFrom(r.SHA256)
	if err != nil || !done || back.SHA256 != v1 {
		t.Fatalf("rollback: %v %v %+v", err, done, back)
	}
	if got, _ := FileSHA256(installed); got != v1 {
		t.Fatal("rollback did not put the previous release back")
	}
	child.Process.Kill()
	child.Wait()
	// The next switch removes the aside copies no longer in use.
	if err := st.Activate(r.ID); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(installed + ".old-*"); len(left) > 1 {
		t.Errorf("aside copies left after their process exited: %v", left)
	}
}

// TestHoldersRestartManager: the Restart Manager names the process running
// the installed exe.
func TestHoldersRestartManager(t *testing.T) {
	installed, _ := selfCopies(t)
	child := runInstalled(t, installed)
	hs, err := Holders(installed)
	if err != nil {
		if isWine() {
			t.Skipf("Restart Manager under Wine: %v", err)
		}
		t.Fatal(err)
	}
	t.Logf("holders: %+v", hs)
	for _, h := range hs {
		if h.PID == child.Process.Pid {
			if !strings.Contains(h.String(), "is using it") {
				t.Errorf("holder %v", h)
			}
			return
		}
	}
	if isWine() {
		t.Skipf("Restart Manager under Wine lists no holder of a running exe (got %+v)", hs)
	}
	t.Fatalf("pid %d not among the holders %+v", child.Process.Pid, hs)
}

// TestStoreLockWindows: LockFileEx keeps a second store out.
func TestStoreLockWindows(t *testing.T) {
	installed, _ := selfCopies(t)
	a, _ := Open(installed, StoreOptions{})
	b, _ := Open(installed, StoreOptions{})
	if err := a.TryLock(); err != nil {
		t.Fatal(err)
	}
	if err := b.TryLock(); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v", err)
	}
	a.Unlock()
	if err := b.TryLock(); err != nil {
		t.Fatal(err)
	}
	b.Unlock()
}

// TestCheckSelfWindows: this test binary passes the format and build
// info checks, and the directory check reads the DACL.
func TestCheckSelfWindows(t *testing.T) {
	installed, candidate := selfCopies(t)
	rep, err := Check(context.Background(), candidate, CheckOptions{Installed: installed})
	t.Logf("report:\n%v", rep)
	if err != nil && !errors.Is(err, ErrUnsafeDir) {
		t.Fatal(err)
	}
	if status(rep, "format") != StatusOK || status(rep, "buildinfo") != StatusOK {
		t.Fatalf("format/buildinfo of a Windows Go exe:\n%v", rep)
	}
}

// TestSmokeJobWindows: a hanging smoke run is killed with the child it
// started (job object).
func TestSmokeJobWindows(t *testing.T) {
	installed, candidate := selfCopies(t)
	pidFile := filepath.Join(filepath.Dir(installed), "child.pid")
	t.Setenv("RELEASE_TEST_CHILD", "hang")
	t.Setenv("RELEASE_TEST_PIDFILE", pidFile)
	rep, err := Check(context.Background(), candidate, CheckOptions{Smoke: "{bin}", SmokeTimeout: 3e9})
	mustFail(t, rep, err, ErrSmokeRun, "smoke", "did not finish within 3s")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the smoke run never started its child: %v", err)
	}
	var pid uint32
	fmt.Sscan(string(b), &pid)
	h, err := windows.OpenProcess(windows.SYNCHRONIZE, false, pid)
	if err != nil {
		return // already gone
	}
	defer windows.CloseHandle(h)
	if ev, _ := windows.WaitForSingleObject(h, 10000); ev != windows.WAIT_OBJECT_0 {
		t.Fatalf("the smoke run's child (pid %d) survived its job", pid)
	}
}
