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
	err = rc.Read(func(fd uintptr) bool {
		res = peekOnce(fd)
		return res != peekNothing || !wait
	})
	if err != nil {
		return peekFailed
	}
	return res
}

// peekOnce is one MSG_PEEK of a byte, not waiting.
func peekOnce(fd uintptr) peekResult {
	var b [1]byte
	n, errno := sysPeek(fd, b[:])
	switch {
	case errno == syscall.EAGAIN || errno == syscall.EINTR:
		return peekNothing
	case errno != 0 || n == 0:
		return peekGone
	default:
		return peekData
	}
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

// awaiter makes bc.writeAwaitingAnswer's system calls; made once per
// backend connection, so that a request allocates nothing for them.
type awaiter struct {
	rc     syscall.RawConn // nil when the connection has no descriptor
	step   func(fd uintptr) bool
	req    []byte
	check  bool
	n      int
	err    error
	called bool
}

func newAwaiter(c net.Conn) *awaiter {
	a := &awaiter{}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			a.rc = rc
		}
	}
	a.step = a.writeThenWait
	return a
}

// writeAwaitingAnswer writes req to the backend in one system call and
// then waits until the connection has something to read (or fails: the
// read that follows says how). It returns the bytes written; after a
// short write, or none (n 0, err nil: the socket was full, or has no
// descriptor), the caller writes the rest the usual way. With check (a
// connection from the pool) it first peeks, within the same wait, and
// writes nothing (errStaleConn) if the backend closed the connection or
// wrote to it while it was idle: a peek in a wait of its own would leave
// a gap in which the backend's end could arrive unseen (its readiness
// cleared by the next wait), and a backend that half-closed and still
// reads would never wake it.
//
// Why by hand: Go's reads try the socket before they wait for it, and an
// answer is never there right after its request was written, so that
// first read fails with EAGAIN on nearly every request (one system call
// in six of a forwarded request). RawConn.Read clears the socket's read
// readiness before its first call: a request written from inside that
// call cannot have its answer's readiness lost, and returning false
// waits for it without the empty read. Nothing may arrive before the
// request on a backend connection, which is what makes this safe there
// (a client connection may have its next request on the way: not there).
func (bc *backendConn) writeAwaitingAnswer(req []byte, check bool) (int, error) {
	a := bc.aw
	if a.rc == nil {
		if check && !idleConnUsable(bc.c) {
			return 0, errStaleConn
		}
		return 0, nil
	}
	a.req, a.check, a.n, a.err, a.called = req, check, 0, nil, false
	_ = a.rc.Read(a.step) // its own error (closed, say) is the next read's
	a.req = nil
	return a.n, a.err
}

func (a *awaiter) writeThenWait(fd uintptr) bool {
	if a.called {
		return true // readable: the caller's read finds the answer
	}
	a.called = true
	if a.check && peekOnce(fd) != peekNothing {
		a.err = errStaleConn
		return true
	}
	n, errno := sysWrite(fd, a.req)
	for errno == syscall.EINTR {
		n, errno = sysWrite(fd, a.req)
	}
	switch errno {
	case 0:
		a.n = n
	case syscall.EAGAIN: // the socket is full: the caller writes the usual way
	default:
		a.err = errno
	}
	return a.err != nil || a.n < len(a.req)
}
