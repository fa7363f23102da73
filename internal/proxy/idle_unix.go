//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// idleCheckable: idleConnUsable can tell.
const idleCheckable = true

// idleConnUsable reports whether an idle backend connection is still
// open with nothing to read: a non-blocking peek finds no data and no end
// of stream (the backend closed it, or wrote something unasked).
func idleConnUsable(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	usable := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		usable = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && usable
}
