package handoff

import (
	"os"

	"golang.org/x/sys/windows"
)

// procStamp returns the creation time of a running process: Windows reuses
// pids quickly, so a pid alone does not say that a draining generation is
// still the same process.
func procStamp(pid int) (uint64, bool) {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION|windows.SYNCHRONIZE, false, uint32(pid))
	if err != nil {
		return 0, false
	}
	defer windows.CloseHandle(h)
	if ev, err := windows.WaitForSingleObject(h, 0); err != nil || ev != uint32(windows.WAIT_TIMEOUT) {
		return 0, false // exited (its exit code may even be 259)
	}
	var created, exited, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(h, &created, &exited, &kernel, &user); err != nil {
		return 0, true
	}
	return uint64(created.Nanoseconds()), true
}

// Self describes this process.
func Self() Proc {
	stamp, _ := procStamp(os.Getpid())
	return Proc{PID: os.Getpid(), Start: stamp}
}

// Alive reports whether p is still running and is still the same process.
func Alive(p Proc) bool {
	stamp, ok := procStamp(p.PID)
	return ok && (p.Start == 0 || stamp == 0 || stamp == p.Start)
}
