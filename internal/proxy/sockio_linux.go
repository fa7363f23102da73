//go:build linux && !race && !386 && !s390x

package proxy

import (
	"syscall"
	"unsafe"
)

// sysRead, sysWrite and sysPeek are the socket calls of the fast path,
// made with RawSyscall: without telling Go's scheduler that the thread
// enters a system call. Why by hand: a loopback write runs the whole TCP
// path and wakes the reader (tens of µs), and Go's monitor thread takes
// the processor (P) of a thread that is in the same system call at two
// of its ticks (20 µs apart) when no P is idle, hands it to another
// thread, and keeps ticking every 20 µs; a system call entered while it
// sleeps wakes it to tick again. Under load that was a tenth of the
// proxy's CPU (the monitor, hand-offs, futex wake-ups), more than its
// whole gap to nginx. The sockets are non-blocking: a call never waits,
// so the P is kept from other work no longer than the call runs.
//
// Not with the race detector: syscall.Read and Write tell it that bytes
// written to a socket happen before their read (RawSyscall does not), so
// that a goroutine and its peer across a socket are seen in order. Not on
// 386 and s390x either: their socket calls go through socketcall(2) (a
// direct recvfrom(2) needs Linux 4.3 or later there).
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(n), errno
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(n), errno
}

// sysPeek is recv(2) of p with MSG_PEEK|MSG_DONTWAIT: it looks without
// consuming and never waits.
func sysPeek(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return int(n), errno
}
