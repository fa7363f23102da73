//go:build unix

package release

import (
	"syscall"
	"testing"
	"time"
)

// waitGone waits (bounded) until pid no longer exists.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d survived the kill of the smoke run's process group", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
