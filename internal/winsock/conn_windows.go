package winsock

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// Conn is a connection accepted by a Listener. Reads and writes go through an
// *os.File over a DuplicateHandle copy of the accepted SOCKET, which puts them
// on the runtime's IOCP, so deadlines work; the SOCKET itself is kept to be
// closed with closesocket (a SOCKET must never be closed with CloseHandle).
type Conn struct {
	f            *os.File
	laddr, raddr *net.TCPAddr

	mu      sync.RWMutex // Close holds it for writing, CloseWrite for reading
	s       windows.Handle
	closed  bool
	cleanup runtime.Cleanup
}

var _ net.Conn = (*Conn)(nil)

// newConn finishes an AcceptEx that accepted as on ls; buf is the AcceptEx
// address buffer. On error the caller still owns as.
func newConn(ls, as windows.Handle, buf *[2 * addrLen]byte) (*Conn, error) {
	// Gives the accepted socket the listener's properties, so that
	// getsockname, getpeername and shutdown work on it.
	if err := windows.Setsockopt(as, windows.SOL_SOCKET, windows.SO_UPDATE_ACCEPT_CONTEXT,
		(*byte)(unsafe.Pointer(&ls)), int32(unsafe.Sizeof(ls))); err != nil {
		return nil, os.NewSyscallError("setsockopt SO_UPDATE_ACCEPT_CONTEXT", err)
	}
	// Like net.TCPConn: no Nagle delays, and keep-alives (at the system's
	// timing) to notice vanished peers. Best effort.
	windows.SetsockoptInt(as, windows.IPPROTO_TCP, windows.TCP_NODELAY, 1)
	windows.SetsockoptInt(as, windows.SOL_SOCKET, windows.SO_KEEPALIVE, 1)

	var lrsa, rrsa *windows.RawSockaddrAny
	var llen, rlen int32
	windows.GetAcceptExSockaddrs(&buf[0], 0, addrLen, addrLen, &lrsa, &llen, &rrsa, &rlen)
	laddr, raddr := rawTCPAddr(lrsa), rawTCPAddr(rrsa)
	if laddr == nil { // not expected; ask the socket instead
		if sa, err := windows.Getsockname(as); err == nil {
			laddr, _ = tcpAddr(sa)
		}
	}
	if raddr == nil {
		if sa, err := windows.Getpeername(as); err == nil {
			raddr, _ = tcpAddr(sa)
		}
	}
	if laddr == nil || raddr == nil {
		return nil, errors.New("winsock: cannot read the accepted connection's addresses")
	}

	var h windows.Handle
	p := windows.CurrentProcess()
	if err := windows.DuplicateHandle(p, as, p, &h, 0, false, windows.DUPLICATE_SAME_ACCESS); err != nil {
		return nil, os.NewSyscallError("DuplicateHandle", err)
	}
	f := os.NewFile(uintptr(h), "tcp:"+laddr.String()+"->"+raddr.String())
	// os.NewFile puts an overlapped handle on the runtime's IOCP (Go >=
	// 1.25); if it did not, deadlines would silently not work.
	if err := f.SetDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("winsock: accepted socket has no deadline support: %w", err)
	}
	c := &Conn{f: f, laddr: laddr, raddr: raddr, s: as}
	// Like net.TCPConn, do not leak the SOCKET of a connection dropped
	// without Close (the *os.File has its own cleanup for its handle).
	c.cleanup = runtime.AddCleanup(c, func(s windows.Handle) { windows.Closesocket(s) }, as)
	return c, nil
}

func rawTCPAddr(rsa *windows.RawSockaddrAny) *net.TCPAddr {
	if rsa == nil {
		return nil
	}
	sa, err := rsa.Sockaddr()
	if err != nil {
		return nil
	}
	a, _ := tcpAddr(sa)
	return a
}

// Read implements net.Conn.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.f.Read(b)
	return n, c.opError("read", err)
}

// Write implements net.Conn.
func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.f.Write(b)
	return n, c.opError("write", err)
}

// Close closes the connection: the file first, then the SOCKET.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("close", net.ErrClosed)
	}
	c.closed = true
	c.cleanup.Stop()
	ferr := c.f.Close()
	if err := windows.Closesocket(c.s); err != nil {
		return c.opError("close", os.NewSyscallError("closesocket", err))
	}
	return c.opError("close", ferr)
}

// CloseWrite shuts down the sending side (shutdown SD_SEND); the peer reads
// EOF while this side can still read.
func (c *Conn) CloseWrite() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return c.opError("close", net.ErrClosed)
	}
	if err := windows.Shutdown(c.s, windows.SHUT_WR); err != nil {
		return c.opError("close", os.NewSyscallError("shutdown", err))
	}
	return nil
}

// Socket returns the accepted SOCKET. It stays owned by c and is valid
// until Close.
func (c *Conn) Socket() windows.Handle { return c.s }

// Duplicate returns the bytes with which process pid rebuilds this
// connection's socket (ConnFromProtocolInfo), to pass the connection on;
// see the package function Duplicate. It fails after Close.
func (c *Conn) Duplicate(pid uint32) ([]byte, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return nil, c.opError("duplicate", net.ErrClosed)
	}
	info, err := Duplicate(c.s, pid)
	return info, c.opError("duplicate", err)
}

// LocalAddr returns the local address, a *net.TCPAddr.
func (c *Conn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr returns the peer's address, a *net.TCPAddr.
func (c *Conn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error { return c.opError("set", c.f.SetDeadline(t)) }

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.opError("set", c.f.SetReadDeadline(t)) }

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.opError("set", c.f.SetWriteDeadline(t))
}

// opError reshapes *os.File errors like net.TCPConn's: a *net.OpError,
// net.ErrClosed after Close, os.ErrDeadlineExceeded (a timeout) on deadlines,
// and a bare io.EOF.
func (c *Conn) opError(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	} else if errno, ok := err.(syscall.Errno); ok {
		err = os.NewSyscallError(op, errno)
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: err}
}
