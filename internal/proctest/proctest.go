// Package proctest holds what the end-to-end tests, the demo and the
// benchmark need to drive real processes: building the binaries, watching
// generations come and go (as their subreaper on Linux), and counting their
// open files.
package proctest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"
)

// Build compiles each package (import path relative to the module root, e.g.
// "./examples/hello") into dir/name and returns the paths by name. extra
// holds per-name extra build flags (e.g. -ldflags). moduleRoot may also be
// the directory of a nested module (a benchmark peer): go build runs there.
func Build(moduleRoot, dir string, pkgs map[string]string, extra map[string][]string) (map[string]string, error) {
	out := map[string]string{}
	for name, pkg := range pkgs {
		bin := filepath.Join(dir, name)
		if runtime.GOOS == "windows" {
			bin += ".exe"
		}
		args := append([]string{"build", "-o", bin}, extra[name]...)
		args = append(args, pkg)
		cmd := exec.Command("go", args...)
		cmd.Dir = moduleRoot
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
		out[name] = bin
	}
	return out, nil
}

// ModuleRoot finds the directory holding go.mod, walking up from the
// working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Tracker watches processes (generations of a service) until they exit,
// and reaps them when they were reparented to us.
type Tracker struct {
	mu     sync.Mutex
	exited map[int]Exit
	live   map[int]bool
	stop   chan struct{}
	done   chan struct{}
}

// Exit is how and when a tracked process ended.
type Exit struct {
	At       time.Time
	Reaped   bool // we reaped it (so we know its status)
	ExitCode int
}

// NewTracker becomes the subreaper of our descendants (Linux) and starts
// polling tracked processes every few milliseconds.
func NewTracker() *Tracker {
	becomeSubreaper()
	t := &Tracker{exited: map[int]Exit{}, live: map[int]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go t.loop()
	return t
}

// Track adds pid to the watched processes. A pid <= 0 (unset) is not a
// process and is ignored: waiting on it would reap any child of the
// group, and a clean-up that kills what is still tracked would signal a
// whole process group.
func (t *Tracker) Track(pid int) {
	if pid <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, gone := t.exited[pid]; !gone {
		t.live[pid] = true
	}
}

func (t *Tracker) loop() {
	defer close(t.done)
	tick := time.NewTicker(3 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		t.mu.Lock()
		for pid := range t.live {
			if ex, ok := checkExited(pid); ok {
				ex.At = time.Now()
				t.exited[pid] = ex
				delete(t.live, pid)
			}
		}
		t.mu.Unlock()
	}
}

// Exited returns how pid ended, if it did.
func (t *Tracker) Exited(pid int) (Exit, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.exited[pid]
	return e, ok
}

// WaitExit waits until pid has exited or ctx ends.
func (t *Tracker) WaitExit(ctx context.Context, pid int) (Exit, error) {
	for {
		if e, ok := t.Exited(pid); ok {
			return e, nil
		}
		select {
		case <-ctx.Done():
			return Exit{}, fmt.Errorf("pid %d still running: %w", pid, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Live returns the tracked pids that have not exited.
func (t *Tracker) Live() []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []int
	for pid := range t.live {
		out = append(out, pid)
	}
	return out
}

// Close stops polling.
func (t *Tracker) Close() {
	close(t.stop)
	<-t.done
}
