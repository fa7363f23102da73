package release

import (
	"errors"
	"os/exec"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/windows"
)

// killGroup puts the smoke process in a kill-on-close job object once it
// has started: on timeout the whole job is terminated, and whatever is
// left of it when the smoke command exits dies when the job is closed.
// os/exec cannot start a process suspended, so a child spawned in the
// first instants, before the assignment, escapes the job.
func killGroup(cmd *exec.Cmd) (started, done func()) {
	var job atomic.Uintptr // set after Start; Cancel may run concurrently
	cmd.Cancel = func() error {
		if j := windows.Handle(job.Load()); j != 0 {
			windows.TerminateJobObject(j, 1)
		}
		return cmd.Process.Kill()
	}
	started = func() {
		j, err := windows.CreateJobObject(nil, nil)
		if err != nil {
			return
		}
		info := windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION{}
		info.BasicLimitInformation.LimitFlags = windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
		if _, err := windows.SetInformationJobObject(j, windows.JobObjectExtendedLimitInformation,
			uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info))); err != nil {
			windows.CloseHandle(j)
			return
		}
		h, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(cmd.Process.Pid))
		if err != nil {
			windows.CloseHandle(j)
			return
		}
		defer windows.CloseHandle(h)
		if err := windows.AssignProcessToJobObject(j, h); err != nil {
			windows.CloseHandle(j)
			return
		}
		job.Store(uintptr(j))
	}
	done = func() {
		if j := windows.Handle(job.Load()); j != 0 {
			windows.CloseHandle(j)
		}
	}
	return started, done
}

// isBusy reports a sharing violation or an access denied on a file in use.
func isBusy(err error) bool {
	return errors.Is(err, windows.ERROR_SHARING_VIOLATION) || errors.Is(err, windows.ERROR_ACCESS_DENIED) ||
		errors.Is(err, windows.ERROR_LOCK_VIOLATION) || errors.Is(err, windows.ERROR_USER_MAPPED_FILE)
}
