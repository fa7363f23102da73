package release

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startWriter starts a process that holds path open for writing (a build
// still writing its output) and returns it; killed at the end of the test.
func startWriter(t *testing.T, path string) *exec.Cmd {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command("sh", "-c", `exec 3>>"$1"; touch "$2"; exec sleep 60`, "sh", path, ready)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if i > 2000 {
			t.Fatal("the writer never opened the file")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cmd
}

func TestHoldersWriter(t *testing.T) {
	needBins(t)
	dir := t.TempDir()
	bin := copyTo(t, bins["app"], dir, "app")
	w := startWriter(t, bin)
	hs, err := Holders(bin)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, h := range hs {
		if h.PID == w.Process.Pid {
			found = true
			if !h.Write || !strings.Contains(h.String(), "has it open for writing") {
				t.Errorf("holder %+v: not seen as a writer", h)
			}
		}
	}
	if !found {
		t.Fatalf("writer pid %d not among the holders %+v", w.Process.Pid, hs)
	}
	// Check refuses it before hashing or running it, naming the process.
	rep, err := Check(context.Background(), bin, CheckOptions{Smoke: "{bin} --version"})
	mustFail(t, rep, err, ErrBusy, "writers", "pid "+strconv.Itoa(w.Process.Pid), "has it open for writing")
	if status(rep, "smoke") != StatusSkipped {
		t.Error("a file being written was run")
	}
	// Running a file open for writing fails with ETXTBSY: the smoke run
	// turns that into ErrBusy with the holder's name.
	r := &Report{}
	checkSmoke(context.Background(), r, bin, CheckOptions{Smoke: "{bin} --version"})
	if err := r.Err(); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(w.Process.Pid)+" (sleep)") {
		t.Fatalf("smoke run of a file being written: %v", err)
	}
}

func TestHoldersRunning(t *testing.T) {
	needBins(t)
	bin := copyTo(t, bins["app"], t.TempDir(), "app")
	pidFile := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command(bin, "--hang", pidFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its --sleep child goes with it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() }()
	hs, err := Holders(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if h.PID == cmd.Process.Pid {
			if h.Write || h.How != "is running it" {
				t.Fatalf("holder %+v, want running, not writing", h)
			}
			return
		}
	}
	t.Fatalf("running pid %d not among the holders %+v", cmd.Process.Pid, hs)
}

func TestHoldersNone(t *testing.T) {
	needBins(t)
	bin := copyTo(t, bins["app"], t.TempDir(), "app")
	hs, err := Holders(bin)
	if err != nil || len(hs) != 0 {
		t.Fatalf("holders of a file nobody holds: %v %+v", err, hs)
	}
	if _, err := Holders(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
