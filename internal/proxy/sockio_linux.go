//go:build linux && !race

package proxy

import (
	"syscall"
	"unsafe"
)

// sysRead and sysWrite are read(2) and write(2) on a non-blocking socket,
// made with RawSyscall: without telling Go's scheduler that the thread
// enters a system call. Why by hand: a loopback write runs the whole TCP
// path and wakes the reader (tens of µs), and Go's monitor thread takes
// the processor (P) of a thread that is in the same system call at two
// of its ticks (20 µs apart) when no P is idle, hands it to another
// thread and keeps ticking every 20 µs. Under load that was a tenth of
// the proxy's CPU (the monitor, hand-offs, futex wake-ups), more than
// nginx spends in all. A non-blocking socket call never waits, so the P
// is not kept from other work for longer than the call runs.
//
// Not with the race detector: syscall.Read and Write tell it that bytes
// written to a socket happen before their read (RawSyscall does not), so
// that a goroutine and its peer across a socket are seen in order.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(n), errno
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(n), errno
}
