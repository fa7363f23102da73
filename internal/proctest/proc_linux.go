package proctest

import (
	"os"
	"strconv"

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
