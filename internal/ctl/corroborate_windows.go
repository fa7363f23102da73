package ctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/windows"
)

// servesEndpoint: the system told which process served the pipe instance
// that answered (GetNamedPipeServerProcessId, in dial).
func servesEndpoint(name string, peer Peer, pid int) error {
	if peer.PID != pid {
		return fmt.Errorf("the status names process %d, but process %d answered on the pipe", pid, peer.PID)
	}
	return nil
}

// processInfo asks the system for a process's program file
// (QueryFullProcessImageName), parent (a process snapshot) and user.
func processInfo(pid int) (procInfo, error) {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return procInfo{}, err
	}
	defer windows.CloseHandle(h)
	buf := make([]uint16, windows.MAX_LONG_PATH)
	n := uint32(len(buf))
	if err := windows.QueryFullProcessImageName(h, 0, &buf[0], &n); err != nil {
		return procInfo{}, fmt.Errorf("reading its program file: %v", err)
	}
	exe := windows.UTF16ToString(buf[:n])
	ppid, err := parentOf(uint32(pid))
	if err != nil {
		return procInfo{}, err
	}
	return procInfo{
		ppid:      ppid,
		exe:       exe,
		open:      func() (*os.File, error) { return os.Open(exe) },
		untrusted: trustedProcess(uint32(pid)),
	}, nil
}

// parentOf finds pid's parent in a snapshot of the processes.
func parentOf(pid uint32) (int, error) {
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPPROCESS, 0)
	if err != nil {
		return -1, err
	}
	defer windows.CloseHandle(snap)
	var e windows.ProcessEntry32
	e.Size = uint32(unsafe.Sizeof(e))
	for err = windows.Process32First(snap, &e); err == nil; err = windows.Process32Next(snap, &e) {
		if e.ProcessID == pid {
			return int(e.ParentProcessID), nil
		}
	}
	return -1, fmt.Errorf("process %d is not in the process list", pid)
}

// samePath compares two Windows paths (case does not matter).
func samePath(a, b string) bool { return strings.EqualFold(filepath.Clean(a), filepath.Clean(b)) }
