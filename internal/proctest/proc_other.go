//go:build !linux

package proctest

import (
	"errors"
	"os"
	"time"
)

func becomeSubreaper() {}

func checkExited(pid int) (Exit, bool) {
	p, err := os.FindProcess(pid)
	if err != nil {
		return Exit{ExitCode: -1}, true
	}
	if !processAlive(p) {
		return Exit{ExitCode: -1}, true
	}
	return Exit{}, false
}

// IsZombie is only known on Linux.
func IsZombie(pid int) bool { return false }

// CountFDs is only implemented on Linux.
func CountFDs(pid int) (int, error) { return 0, errors.New("fd counting needs /proc") }

// Usage is a process's resident memory and CPU time so far.
type Usage struct {
	RSSKiB int64
	CPU    time.Duration
}

// ReadUsage is only implemented on Linux.
func ReadUsage(pid int) (Usage, error) { return Usage{}, errors.New("process usage needs /proc") }

// PIDWithEnv needs /proc: 0 here.
func PIDWithEnv(kv string) int { return 0 }
