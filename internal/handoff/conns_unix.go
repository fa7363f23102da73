//go:build unix

package handoff

import (
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// connsSupported: connections travel as descriptors (SCM_RIGHTS).
const connsSupported = true

// FileConn returns a connection serving the socket f, a connection passed
// by a previous generation (received by TakeConns's or LinkConnsHooks's
// Take). f stays the caller's to close.
func FileConn(f *os.File) (net.Conn, error) { return net.FileConn(f) }

// sendConns sends the sockets of conns in one message of one byte.
func sendConns(ch net.Conn, conns []net.Conn) error {
	out, err := prepareConns(conns)
	if err != nil {
		return err
	}
	defer out.close()
	return out.send(ch)
}

// preparedConns are the sockets of a batch, duplicated for the send
// (close-on-exec): the duplicates are closed after it, the kernel holds
// its own references while the message travels.
type preparedConns struct{ fds []int }

// prepareConns duplicates the sockets of conns; nothing is left open when
// it fails.
func prepareConns(conns []net.Conn) (*preparedConns, error) {
	p := &preparedConns{fds: make([]int, 0, len(conns))}
	for _, c := range conns {
		sc, ok := c.(syscall.Conn)
		if !ok {
			p.close()
			return nil, fmt.Errorf("connection %T has no descriptor", c)
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			p.close()
			return nil, err
		}
		var dup int
		var derr error
		if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
			p.close()
			return nil, err
		}
		if derr != nil {
			p.close()
			return nil, fmt.Errorf("duplicating a connection's descriptor: %w", derr)
		}
		p.fds = append(p.fds, dup)
	}
	return p, nil
}

// send sends the sockets in one message of one byte.
func (p *preparedConns) send(ch net.Conn) error {
	uc, ok := ch.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("handoff channel is a %T, not a unix socket", ch)
	}
	return sendFDs(uc, p.fds)
}

// close closes the duplicates.
func (p *preparedConns) close() {
	for _, fd := range p.fds {
		unix.Close(fd)
	}
	p.fds = nil
}

// sendFiles sends the descriptors of files in one message of one byte.
func sendFiles(ch net.Conn, files []*os.File) error {
	uc, ok := ch.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("link is a %T, not a unix socket", ch)
	}
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	return sendFDs(uc, fds)
}

func sendFDs(uc *net.UnixConn, fds []int) error {
	if _, _, err := uc.WriteMsgUnix([]byte{'C'}, unix.UnixRights(fds...), nil); err != nil {
		return fmt.Errorf("sending %d connections: %w", len(fds), err)
	}
	return nil
}

// recvConns receives the n sockets sendConns sent.
func recvConns(ch net.Conn, n int) ([]*os.File, error) {
	uc, ok := ch.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("handoff channel is a %T, not a unix socket", ch)
	}
	fds, err := recvRights(uc, n)
	if err != nil {
		return nil, err
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), "baton-conn")
	}
	return files, nil
}

// recvRights reads a one-byte message that carries exactly n descriptors
// (marked close-on-exec); anything else is an error, and what did arrive
// is closed.
func recvRights(c *net.UnixConn, n int) ([]int, error) {
	var b [1]byte
	oob := make([]byte, unix.CmsgSpace(4*n))
	_, oobn, flags, _, err := c.ReadMsgUnix(b[:], oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	if cmsgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
		for _, m := range cmsgs {
			if got, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, got...)
			}
		}
	}
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
	if len(fds) != n || flags&unix.MSG_CTRUNC != 0 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("expected %d descriptors, got %d", n, len(fds))
	}
	return fds, nil
}
