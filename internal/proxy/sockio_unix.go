//go:build unix

package proxy

import (
	"io"
	"net"
	"syscall"
)

// sockIO reads and writes a connection's socket through its RawConn:
// the same waits and deadlines as the net.Conn's own Read and Write, with
// the system calls made by sysRead and sysWrite (sockio_linux.go says why
// that matters). Made once per connection, so that a read or a write
// allocates nothing. Unlike a net.Conn's methods, one sockIO serves one
// goroutine at a time: a bufio.Reader's or a bufio.Writer's. Its errors
// are not the net.Conn's: a socket's error is the bare syscall.Errno, a
// deadline's or a close's a *net.OpError of "raw-read" or "raw-write"
// (the fast path tells errors apart by its own wrapped sentinels).
type sockIO struct {
	rc  syscall.RawConn
	p   []byte
	n   int
	err error

	readStep, writeStep func(fd uintptr) bool
}

// newSockIO returns c's socket I/O; nil when c is not a plain TCP or
// Unix connection: a type that wraps one (to count its bytes, say) could
// offer its descriptor and still want its own Read and Write called.
func newSockIO(c net.Conn) *sockIO {
	var sc syscall.Conn
	switch c := c.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &sockIO{rc: rc}
	s.readStep, s.writeStep = s.readOnce, s.writeAll
	return s
}

// sockReader is what a bufio.Reader of c reads from, sockWriter what a
// bufio.Writer of c writes to: each its own sockIO, one per direction.
func sockReader(c net.Conn) io.Reader {
	if s := newSockIO(c); s != nil {
		return s
	}
	return c
}

func sockWriter(c net.Conn) io.Writer {
	if s := newSockIO(c); s != nil {
		return s
	}
	return c
}

func (s *sockIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.p, s.n, s.err = p, 0, nil
	err := s.rc.Read(s.readStep)
	s.p = nil
	if err == nil {
		err = s.err
	}
	return s.n, err
}

func (s *sockIO) readOnce(fd uintptr) bool {
	for {
		n, errno := sysRead(fd, s.p)
		switch errno {
		case 0:
			s.n = n
			if n == 0 {
				s.err = io.EOF
			}
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // the RawConn waits for the socket, or the deadline
		default:
			s.err = errno
			return true
		}
	}
}

func (s *sockIO) Write(p []byte) (int, error) {
	s.p, s.n, s.err = p, 0, nil
	err := s.rc.Write(s.writeStep)
	s.p = nil
	if err == nil {
		err = s.err
	}
	return s.n, err
}

func (s *sockIO) writeAll(fd uintptr) bool {
	for s.n < len(s.p) {
		n, errno := sysWrite(fd, s.p[s.n:])
		switch {
		case errno == 0 && n == 0:
			s.err = io.ErrUnexpectedEOF // as poll.FD.Write: never spin on nothing written
			return true
		case errno == 0:
			s.n += n
		case errno == syscall.EINTR:
		case errno == syscall.EAGAIN:
			return false
		default:
			s.err = errno
			return true
		}
	}
	return true
}
