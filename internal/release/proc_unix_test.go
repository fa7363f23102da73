//go:build unix

package release

import (
	"syscall"
	"testing"
	"time"
)

// waitGone waits (bounded) until pid no longer exists. A pid <= 0 (an
// unread pid file) fails at once: kill(0, 0) asks about our own process
// group, which always exists.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	if pid <= 0 {
		t.Fatalf("no pid to wait for (%d)", pid)
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d survived the kill of the smoke run's process group", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
