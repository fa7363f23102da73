package handlecount

import (
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/windows"
)

// x/sys has no wrapper for GetProcessHandleCount.
var procGetProcessHandleCount = windows.NewLazySystemDLL("kernel32.dll").NewProc("GetProcessHandleCount")

// Count returns the number of open handles. Wine 8.0 answers 0 from
// GetProcessHandleCount, so a zero falls back to countByProbing.
func Count() (int, error) { return Of(os.Getpid()) }

// Of returns the number of open handles of process pid.
func Of(pid int) (int, error) {
	h, done, err := open(pid, windows.PROCESS_QUERY_LIMITED_INFORMATION)
	if err != nil {
		return 0, err
	}
	defer done()
	var n uint32
	if r, _, err := procGetProcessHandleCount.Call(uintptr(h), uintptr(unsafe.Pointer(&n))); r == 0 {
		return 0, err
	}
	if n != 0 {
		return int(n), nil
	}
	// Probing needs more access; asked for only here, so that real
	// Windows counts whatever it may query.
	h, done2, err := open(pid, windows.PROCESS_DUP_HANDLE)
	if err != nil {
		return 0, err
	}
	defer done2()
	return countByProbing(h)
}

// open returns a handle of process pid with access, and what closes it.
func open(pid int, access uint32) (windows.Handle, func(), error) {
	if pid == os.Getpid() {
		return windows.CurrentProcess(), func() {}, nil
	}
	h, err := windows.OpenProcess(access, false, uint32(pid))
	if err != nil {
		return 0, nil, err
	}
	return h, func() { _ = windows.CloseHandle(h) }, nil
}

// probeGap ends the probing of handle values: Wine gives out the lowest
// free slot, so this many free values in a row are past the last handle.
const probeGap = 1024

// countByProbing counts the handles of process p by duplicating each
// handle value in turn (the copy closed at once). It is for Wine, whose
// GetProcessHandleCount answers 0. Not the system handle table
// (NtQuerySystemInformation): Wine 8.0's server walks each process's
// handle table with an unsigned index against a last slot of -1 when a
// table is empty, and crashes (SIGSEGV), leaving every Wine process of
// the prefix waiting on a server that is gone (docs/windows.md). About a
// thousand server calls a count, and only under Wine: real Windows
// answers GetProcessHandleCount (0 only for a process that has ended,
// for which probing finds nothing: an error, shown as unknown). A gap of
// probeGap free values below live handles would undercount them.
func countByProbing(p windows.Handle) (int, error) {
	self := windows.CurrentProcess()
	count := 0
	for v, misses := uintptr(4), 0; misses < probeGap && v < 1<<24; v += 4 {
		var dup windows.Handle
		if windows.DuplicateHandle(p, windows.Handle(v), self, &dup, 0, false, windows.DUPLICATE_SAME_ACCESS) != nil {
			misses++
			continue
		}
		_ = windows.CloseHandle(dup)
		count++
		misses = 0
	}
	if count == 0 {
		return 0, errors.New("handlecount: no handle found by probing")
	}
	return count, nil
}
