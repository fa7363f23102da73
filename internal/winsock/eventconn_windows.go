package winsock

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/windows"
)

// EventConn is a TCP connection that another process accepted and passed
// to this one (a generation's idle keep-alive connection moving to its
// successor). Its socket is associated with the completion port of the
// process that accepted it, and every copy shares that association, so
// this process cannot use its own: reads and writes are overlapped WSARecv
// and WSASend completed through events (never an IOCP), with deadlines of
// their own, like PacketConn. It can be passed on again (Duplicate).
//
// One Read and one Write may run at the same time; further concurrent
// calls of the same kind wait for their turn. A blocked Read or Write holds
// an OS thread.
type EventConn struct {
	evSocket
	laddr, raddr *net.TCPAddr
	cleanup      runtime.Cleanup
}

var _ net.Conn = (*EventConn)(nil)

// ConnFromProtocolInfo serves a connected TCP socket rebuilt from bytes that
// Duplicate produced for this process.
func ConnFromProtocolInfo(info []byte) (*EventConn, error) {
	s, err := socketFromProtocolInfo(info, windows.SOCK_STREAM, windows.IPPROTO_TCP)
	if err != nil {
		return nil, err
	}
	c, err := newEventConn(s)
	if err != nil {
		windows.Closesocket(s)
		return nil, err
	}
	return c, nil
}

// ConnFromSocket serves a copy of the connected TCP socket h, a handle of
// this process (a SOCKET, or a handle duplicated from one); h stays the
// caller's.
func ConnFromSocket(h windows.Handle) (*EventConn, error) {
	info, err := Duplicate(h, uint32(os.Getpid()))
	if err != nil {
		return nil, err
	}
	return ConnFromProtocolInfo(info)
}

// ConnHandleFromProtocolInfo rebuilds a connected TCP socket from bytes that
// Duplicate produced for this process and returns a plain handle to it (a
// DuplicateHandle copy; the SOCKET made on the way is closed), to carry the
// connection inside this process until ConnFromSocket serves it or it is
// passed on. Close it with CloseHandle (os.File.Close); never use it for
// I/O through an IOCP.
func ConnHandleFromProtocolInfo(info []byte) (windows.Handle, error) {
	s, err := socketFromProtocolInfo(info, windows.SOCK_STREAM, windows.IPPROTO_TCP)
	if err != nil {
		return windows.InvalidHandle, err
	}
	defer windows.Closesocket(s)
	if _, err := windows.Getpeername(s); err != nil {
		return windows.InvalidHandle, fmt.Errorf("winsock: socket is not a connected TCP socket: %w", os.NewSyscallError("getpeername", err))
	}
	var h windows.Handle
	p := windows.CurrentProcess()
	if err := windows.DuplicateHandle(p, s, p, &h, 0, false, windows.DUPLICATE_SAME_ACCESS); err != nil {
		return windows.InvalidHandle, os.NewSyscallError("DuplicateHandle", err)
	}
	return h, nil
}

// newEventConn wraps the connected socket s; on error the caller still
// owns s.
func newEventConn(s windows.Handle) (*EventConn, error) {
	// WSASocket may build a fresh socket from info that only looks right:
	// insist on a connected one.
	var laddr, raddr *net.TCPAddr
	sa, err := windows.Getsockname(s)
	if err == nil {
		laddr, _ = tcpAddr(sa)
		if sa, err = windows.Getpeername(s); err == nil {
			raddr, _ = tcpAddr(sa)
		}
	}
	if err == nil && (laddr == nil || raddr == nil) {
		err = errors.New("not an IP socket")
	}
	if err != nil {
		return nil, fmt.Errorf("winsock: socket is not a connected TCP socket: %w", err)
	}
	c := &EventConn{laddr: laddr, raddr: raddr}
	if err := c.init(s, 0); err != nil {
		return nil, err
	}
	// Like net.TCPConn, do not leak the socket of a connection dropped
	// without Close. No operation is pending then: it would hold c.
	c.cleanup = runtime.AddCleanup(c, (*evHandles).release, c.h)
	return c, nil
}

// Socket returns the SOCKET. It stays owned by c and is valid until Close.
func (c *EventConn) Socket() windows.Handle { return c.s }

// Duplicate returns the bytes with which process pid rebuilds this
// connection's socket (ConnFromProtocolInfo); see the package function
// Duplicate. It fails after Close.
func (c *EventConn) Duplicate(pid uint32) ([]byte, error) {
	var info []byte
	err := c.withSocket(func(s windows.Handle) (err error) {
		info, err = Duplicate(s, pid)
		return err
	})
	return info, c.opError("duplicate", err)
}

// Read implements net.Conn. After Close the error satisfies
// errors.Is(err, net.ErrClosed); past the read deadline it satisfies
// errors.Is(err, os.ErrDeadlineExceeded) and is a timeout. Bytes that
// arrived at the same moment as Close or the deadline are still returned.
func (c *EventConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	d := &c.r
	d.mu.Lock()
	defer d.mu.Unlock()
	n, err := c.do(d, func(op *ioOp) error {
		m := op.grow(len(b))
		op.wsabuf = windows.WSABuf{Len: uint32(m), Buf: &op.buf[0]}
		op.flags = 0
		return windows.WSARecv(c.s, &op.wsabuf, 1, &op.qty, &op.flags, &op.ov, nil)
	})
	if err != nil {
		return 0, c.opError("read", wrapErrno("wsarecv", err))
	}
	if n == 0 {
		return 0, io.EOF
	}
	return copy(b, d.op.buf[:n]), nil
}

// Write implements net.Conn. After Close the error satisfies
// errors.Is(err, net.ErrClosed); past the write deadline it satisfies
// errors.Is(err, os.ErrDeadlineExceeded) and is a timeout.
func (c *EventConn) Write(b []byte) (int, error) {
	d := &c.w
	d.mu.Lock()
	defer d.mu.Unlock()
	done := 0
	for done < len(b) {
		n, err := c.do(d, func(op *ioOp) error {
			m := op.grow(len(b) - done)
			copy(op.buf[:m], b[done:])
			op.wsabuf = windows.WSABuf{Len: uint32(m), Buf: &op.buf[0]}
			return windows.WSASend(c.s, &op.wsabuf, 1, &op.qty, 0, &op.ov, nil)
		})
		done += int(n)
		if err != nil {
			return done, c.opError("write", wrapErrno("wsasend", err))
		}
		if n == 0 {
			return done, c.opError("write", io.ErrShortWrite)
		}
	}
	return done, nil
}

// Close wakes blocked Read and Write calls, which cancel their operations,
// then closes this process's copy of the socket: the connection stays open
// while another process holds a copy. Close returns within a bounded time;
// a second Close reports net.ErrClosed.
func (c *EventConn) Close() error {
	c.cleanup.Stop()
	return c.opError("close", c.close())
}

// CloseWrite shuts down the sending side (shutdown SD_SEND), for every copy
// of the socket: the peer reads EOF while this side can still read.
func (c *EventConn) CloseWrite() error {
	return c.opError("close", c.withSocket(func(s windows.Handle) error {
		return wrapErrno("shutdown", windows.Shutdown(s, windows.SHUT_WR))
	}))
}

// LocalAddr returns the local address, a *net.TCPAddr.
func (c *EventConn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr returns the peer's address, a *net.TCPAddr.
func (c *EventConn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline implements net.Conn: it sets both the read and the write
// deadline, waking blocked calls to apply them.
func (c *EventConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline implements net.Conn; it wakes a blocked Read to apply the
// new deadline. A zero t means no deadline.
func (c *EventConn) SetReadDeadline(t time.Time) error {
	return c.opError("set", c.r.setDeadline(t))
}

// SetWriteDeadline implements net.Conn; it wakes a blocked Write to apply
// the new deadline. A zero t means no deadline.
func (c *EventConn) SetWriteDeadline(t time.Time) error {
	return c.opError("set", c.w.setDeadline(t))
}

func (c *EventConn) opError(op string, err error) error {
	if err == nil {
		return nil
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: err}
}

// wrapErrno names the call that failed with a system error; other errors
// (net.ErrClosed, os.ErrDeadlineExceeded, errStuck) are returned as they are.
func wrapErrno(call string, err error) error {
	if errno, ok := err.(syscall.Errno); ok {
		return os.NewSyscallError(call, errno)
	}
	return err
}
