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
// GetProcessHandleCount, so a zero falls back to counting this process's
// entries in the system handle table.
func Count() (int, error) { return Of(os.Getpid()) }

// Of returns the number of open handles of process pid.
func Of(pid int) (int, error) {
	h := windows.CurrentProcess()
	if pid != os.Getpid() {
		var err error
		if h, err = windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid)); err != nil {
			return 0, err
		}
		defer windows.CloseHandle(h)
	}
	var n uint32
	if r, _, err := procGetProcessHandleCount.Call(uintptr(h), uintptr(unsafe.Pointer(&n))); r == 0 {
		return 0, err
	}
	if n != 0 {
		return int(n), nil
	}
	return countFromSystemTable(pid)
}

func countFromSystemTable(forPID int) (int, error) {
	// SYSTEM_HANDLE_TABLE_ENTRY_INFO_EX, as laid out on 64 bits.
	type entry struct {
		Object                uintptr
		UniqueProcessID       uintptr
		HandleValue           uintptr
		GrantedAccess         uint32
		CreatorBackTraceIndex uint16
		ObjectTypeIndex       uint16
		HandleAttributes      uint32
		Reserved              uint32
	}
	buf := make([]byte, 1<<20)
	for {
		var ret uint32
		err := windows.NtQuerySystemInformation(windows.SystemExtendedHandleInformation, unsafe.Pointer(&buf[0]), uint32(len(buf)), &ret)
		if err == windows.STATUS_INFO_LENGTH_MISMATCH && len(buf) < 1<<28 {
			buf = make([]byte, max(2*len(buf), int(ret)+1<<16))
			continue
		}
		if err != nil {
			return 0, err
		}
		break
	}
	total := *(*uintptr)(unsafe.Pointer(&buf[0]))
	if uintptr(len(buf)) < 2*unsafe.Sizeof(uintptr(0))+total*unsafe.Sizeof(entry{}) {
		return 0, errors.New("handle table larger than its buffer")
	}
	entries := unsafe.Slice((*entry)(unsafe.Pointer(&buf[2*unsafe.Sizeof(uintptr(0))])), total)
	pid := uintptr(forPID)
	count := 0
	for _, e := range entries {
		if e.UniqueProcessID == pid {
			count++
		}
	}
	return count, nil
}
