//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// fastPathSupported: the fast path can check a pooled backend connection
// and watch a waiting client without consuming their bytes (MSG_PEEK).
const fastPathSupported = true

// peekable reports whether c gives access to its socket for a peek.
func peekable(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	_, err := sc.SyscallConn()
	return err == nil
}

// peekResult is what a one-byte MSG_PEEK found.
type peekResult int

const (
	peekNothing peekResult = iota // nothing to read yet
	peekData                      // unread bytes
	peekGone                      // end of stream or a socket error
	peekFailed                    // c's own error: closed, or its read deadline passed
)

// peek looks at c's socket without consuming anything. With wait it
// waits (until c's read deadline) for something to be there.
func peek(c net.Conn, wait bool) peekResult {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return peekFailed
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return peekFailed
	}
	res := peekNothing
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK || rerr == syscall.EINTR:
			res = peekNothing
			return !wait
		case rerr != nil || n == 0:
			res = peekGone
		default:
			res = peekData
		}
		return true
	})
	if err != nil {
		return peekFailed
	}
	return res
}

// idleConnUsable reports whether an idle backend connection is still
// open with nothing to read: the backend neither closed it nor wrote
// anything unasked (late bytes of an earlier answer would otherwise be
// read as the next request's answer).
func idleConnUsable(c net.Conn) bool { return peek(c, false) == peekNothing }

// clientGone waits until the client connection c has something to read,
// and reports whether that is its end (the client left) rather than
// bytes of a next request. It returns false when c's read deadline passes.
func clientGone(c net.Conn) bool { return peek(c, true) == peekGone }
