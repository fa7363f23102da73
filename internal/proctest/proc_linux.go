package proctest

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func becomeSubreaper() {
	// Orphaned generations are reparented to us: we see their exit and reap
	// them, so that a test can tell a zombie from a clean exit.
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// checkExited reaps pid if it is our (possibly adopted) child and has
// exited, or reports it gone when it no longer exists.
func checkExited(pid int) (Exit, bool) {
	var ws unix.WaitStatus
	got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	if got == pid && err == nil {
		return Exit{Reaped: true, ExitCode: ws.ExitStatus()}, true
	}
	if err := unix.Kill(pid, 0); err == unix.ESRCH {
		return Exit{ExitCode: -1}, true
	}
	return Exit{}, false
}

// IsZombie reports whether pid exists as a zombie.
func IsZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ')' {
			return i+2 < len(b) && b[i+2] == 'Z'
		}
	}
	return false
}

// CountFDs counts the open file descriptors of pid.
func CountFDs(pid int) (int, error) {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}

// Usage is a process's resident memory and CPU time so far.
type Usage struct {
	RSSKiB int64
	CPU    time.Duration // user + system
}

// ReadUsage reads pid's resident set size and CPU time from /proc.
func ReadUsage(pid int) (Usage, error) {
	var u Usage
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &u.RSSKiB)
		}
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return u, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return u, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 13 {
		return u, fmt.Errorf("short /proc/%d/stat", pid)
	}
	// Fields 14 and 15 of stat (utime, stime) in clock ticks; the kernel's
	// USER_HZ is 100 on every Linux architecture Go supports.
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	u.CPU = time.Duration(ut+stime) * 10 * time.Millisecond
	return u, nil
}

// PIDWithEnv is the pid of a process whose environment holds kv (as
// "NAME=value"), 0 when there is none: how a test finds a process another
// one started (an activator's app, a supervisor's generation).
func PIDWithEnv(kv string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, v := range bytes.Split(b, []byte{0}) {
			if string(v) == kv {
				return pid
			}
		}
	}
	return 0
}
