//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package loadgen

import (
	"bufio"
	"net"
	"syscall"
	"time"
)

// peerClosed reports whether an idle keep-alive connection must not be
// reused: the server closed it (FIN/RST pending) or sent unsolicited bytes
// after the last complete response. It peeks with MSG_DONTWAIT, so it never
// blocks and has no timing window of its own.
func peerClosed(c net.Conn, br *bufio.Reader) bool {
	if br.Buffered() > 0 {
		return true
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	// A stale deadline from the previous request would make rc.Read fail
	// without looking at the socket.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return true
	}
	closed := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN: nothing pending, still open. Otherwise it is EOF (n == 0),
		// unsolicited data (n > 0) or an error such as ECONNRESET.
		closed = err != syscall.EAGAIN && err != syscall.EWOULDBLOCK && err != syscall.EINTR
		return true
	})
	return err != nil || closed
}
