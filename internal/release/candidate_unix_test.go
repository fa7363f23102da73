//go:build unix

package release

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The candidate sits in a directory another user may write to: its name
// is swapped the moment after baton opened it (testHookCandidateOpened
// stands for the attacker's timing). What is checked and staged must be
// the file that was opened; no FIFO may block the stage, no device be
// copied, and nothing may be left behind.

// swapAfterOpen makes the candidate's name point at something else once
// it has been opened, by renaming make()'s result over it (as an attacker
// with write access to the directory would), then calls then (if set).
func swapAfterOpen(t *testing.T, cand string, make func(tmp string) error, then func()) {
	t.Helper()
	swapped := false
	testHookCandidateOpened = func(path string) {
		if path != cand || swapped {
			return
		}
		swapped = true
		tmp := cand + ".swap"
		if err := make(tmp); err != nil {
			t.Errorf("preparing the swap: %v", err)
			return
		}
		if err := os.Rename(tmp, cand); err != nil {
			t.Errorf("swapping the candidate: %v", err)
			return
		}
		if then != nil {
			then()
		}
	}
	t.Cleanup(func() {
		testHookCandidateOpened = nil
		if !swapped {
			t.Error("the candidate was never swapped: the test proves nothing")
		}
	})
}

// stageSwapped stages cand (swapped after its open) under the store lock
// and checks that the original file was staged and that nothing is left.
func stageSwapped(t *testing.T, cand, wantSHA string) {
	t.Helper()
	installed := copyTo(t, bins["app"], t.TempDir(), "app")
	s := openLocked(t, installed, 3)
	rep, rel, err := s.CheckAndStage(context.Background(), cand, CheckOptions{})
	if err != nil {
		t.Fatalf("staging the candidate that was opened, before its name was swapped: %v\n%v", err, rep)
	}
	if rel.SHA256 != wantSHA || rep.SHA256 != wantSHA || sha(t, rel.Path) != wantSHA {
		t.Fatalf("checked %s and staged %s (file %s); the file opened has sha256 %s", rep.SHA256, rel.SHA256, sha(t, rel.Path), wantSHA)
	}
	if fi, err := os.Stat(rel.Path); err != nil || fi.Size() != rel.Size || rel.Size != rep.Size {
		t.Fatalf("staged %v bytes (report %d, release %d): %v", fi.Size(), rep.Size, rel.Size, err)
	}
	if left, _ := filepath.Glob(filepath.Join(s.Dir(), ".check-*")); len(left) != 0 {
		t.Errorf("private copies left in the store: %v", left)
	}
	s.Unlock()
	other, err := Open(installed, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.TryLock(); err != nil {
		t.Fatalf("the releases lock is still held after the stage returned: %v", err)
	}
	other.Unlock()
}

// TestCandidateSwappedForDevZero: swapped for a link to /dev/zero after
// the open, the candidate is still the file opened (before the fix the
// copy followed the link and filled the disk).
func TestCandidateSwappedForDevZero(t *testing.T) {
	needBins(t)
	cand := copyTo(t, bins["app2"], t.TempDir(), "app")
	want := sha(t, cand)
	swapAfterOpen(t, cand, func(tmp string) error { return os.Symlink("/dev/zero", tmp) }, nil)
	stageSwapped(t, cand, want)
}

// TestCandidateSwappedForFIFO: swapped for a FIFO after the open, the
// stage does not wait for a writer (before the fix it blocked forever,
// the releases lock held and a .check-* directory left behind). If the
// code under test opens the FIFO by name, this test notices (a writer can
// then open it without blocking), says so, and frees the reader.
func TestCandidateSwappedForFIFO(t *testing.T) {
	needBins(t)
	cand := copyTo(t, bins["app2"], t.TempDir(), "app")
	want := sha(t, cand)
	stop := make(chan struct{})
	readByName := make(chan bool, 1)
	watching := false
	swapAfterOpen(t, cand, func(tmp string) error { return syscall.Mkfifo(tmp, 0o644) }, func() {
		watching = true
		go func() {
			for {
				// O_WRONLY|O_NONBLOCK opens only when a reader has the
				// FIFO open, i.e. the stage opened it by name.
				if w, err := os.OpenFile(cand, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					w.Close() // EOF for the reader: unblocks it
					readByName <- true
					return
				}
				select {
				case <-stop:
					readByName <- false
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		}()
	})
	defer func() {
		close(stop)
		if watching && <-readByName {
			t.Error("the stage opened the FIFO that replaced the candidate's name (and waited for a writer)")
		}
	}()
	stageSwapped(t, cand, want)
}

// TestCandidateReplacedBetweenCheckAndCopy: replaced by another regular
// file after the open, the candidate checked and staged is the one opened,
// not the replacement.
func TestCandidateReplacedBetweenCheckAndCopy(t *testing.T) {
	needBins(t)
	dir := t.TempDir()
	cand := copyTo(t, bins["app2"], dir, "app")
	want := sha(t, cand)
	other := copyTo(t, bins["app"], dir, "other")
	swapAfterOpen(t, cand, func(tmp string) error { return os.Link(other, tmp) }, nil)
	stageSwapped(t, cand, want)
	if sha(t, cand) == want {
		t.Fatal("the candidate's name still holds the original: the swap did not happen")
	}
}

// TestCandidateNotRegularRefused: a link, a FIFO, a device or a directory
// given as the candidate is refused at once (ErrNotExecutable, a message
// that says what it is), nothing copied, nothing left, the lock free.
func TestCandidateNotRegularRefused(t *testing.T) {
	needBins(t)
	dir := t.TempDir()
	real := copyTo(t, bins["app2"], dir, "real")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	installed := copyTo(t, bins["app"], t.TempDir(), "app")
	s := openLocked(t, installed, 3)
	for _, tc := range []struct{ cand, says string }{
		{link, "is a symbolic link (to " + real + ")"},
		{zero, "is a symbolic link (to /dev/zero)"},
		{fifo, "is a FIFO"},
		{"/dev/null", "is a device"},
		{dir, "is a directory"},
	} {
		rep, _, err := s.CheckAndStage(context.Background(), tc.cand, CheckOptions{})
		if !errors.Is(err, ErrNotExecutable) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("candidate %s: %v (report %v), want ErrNotExecutable saying %q", tc.cand, err, rep, tc.says)
		}
		if _, err := Check(context.Background(), tc.cand, CheckOptions{}); !errors.Is(err, ErrNotExecutable) {
			t.Errorf("Check(%s): %v, want ErrNotExecutable", tc.cand, err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(s.Dir(), ".check-*")); len(left) != 0 {
		t.Errorf("private copies left in the store: %v", left)
	}
	if rels, _ := s.List(); len(rels) != 0 {
		t.Errorf("refused candidates were staged: %+v", rels)
	}
}
