//go:build unix

package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// LinkConn is one end of a supervisor link (see link.go).
type LinkConn struct {
	c      *net.UnixConn
	mu     sync.Mutex // one exchange at a time
	broken bool       // an exchange failed half-way: the stream is out of step
}

// Close closes the link.
func (l *LinkConn) Close() error { return l.c.Close() }

// fail closes the link after a failed exchange: what is left in the stream
// (a late answer, half a state blob) must never be read as the answer to a
// later request.
func (l *LinkConn) fail(err error) error {
	l.broken = true
	l.c.Close()
	return err
}

// Broken reports whether an exchange failed half-way (the link is closed).
func (l *LinkConn) Broken() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.broken
}

// usable refuses an exchange on a link that failed before.
func (l *LinkConn) usable() error {
	if l.broken {
		return linkErr("closed after an earlier failed exchange")
	}
	return nil
}

// DialLink connects to the supervisor link named in EnvLink, says hello and
// reads what the previous generation handed over (state and named files;
// empty for a first generation). Without EnvLink it returns nils.
func DialLink(timeout time.Duration, maxState int64) (*LinkConn, *Handed, error) {
	path, ok := os.LookupEnv(EnvLink)
	if !ok {
		return nil, nil, nil
	}
	os.Unsetenv(EnvLink) // not for our own children
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, nil, linkErr("connecting to %s: %v", path, err)
	}
	l := &LinkConn{c: c.(*net.UnixConn)}
	_ = l.c.SetDeadline(time.Now().Add(timeout))
	if err := writeJSON(l.c, LinkHello{Version: LinkVersion, PID: os.Getpid()}); err != nil {
		l.c.Close()
		return nil, nil, linkErr("hello: %v", err)
	}
	h, err := recvHanded(l.c, maxState)
	if err != nil {
		l.c.Close()
		return nil, nil, err
	}
	_ = l.c.SetDeadline(time.Time{})
	return l, h, nil
}

// Serve answers the supervisor's requests until the link closes:
// handover returns what the next generation gets (the items stay the
// caller's), drain makes this generation drain.
func (l *LinkConn) Serve(handover func() (*Handed, error), drain func()) error {
	for {
		var req LinkRequest
		if err := readJSON(l.c, &req); err != nil {
			return err
		}
		switch req.Op {
		case LinkHandover:
			h, err := handover()
			if err != nil {
				if werr := writeJSON(l.c, LinkReply{Code: "state", Error: err.Error()}); werr != nil {
					return werr
				}
				continue
			}
			if err := writeJSON(l.c, LinkReply{OK: true}); err != nil {
				return err
			}
			if err := sendHanded(l.c, h); err != nil {
				return err
			}
		case LinkDrain:
			drain()
			if err := writeJSON(l.c, LinkReply{OK: true}); err != nil {
				return err
			}
		default:
			if err := writeJSON(l.c, LinkReply{Code: "protocol", Error: fmt.Sprintf("unknown link operation %q", req.Op)}); err != nil {
				return err
			}
		}
	}
}

// LinkListener is the supervisor's end of one generation's link before
// the generation connects: a unix socket here, a named pipe on Windows.
type LinkListener = net.UnixListener

// ListenLink creates the supervisor's end of a generation's link: a unix
// socket at the path name (which must not exist; put it in a directory
// only this user can enter), mode 0600. It returns the listener and the
// value of EnvLink for the generation. On Windows, name names a pipe.
func ListenLink(name string) (*LinkListener, string, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		return nil, "", linkErr("%v", err)
	}
	if err := os.Chmod(name, 0o600); err != nil {
		ln.Close()
		return nil, "", linkErr("%v", err)
	}
	return ln, name, nil
}

// AcceptLink waits until a generation connects to ln and says hello (or
// ctx ends). A generation that speaks another link version is refused, and
// so is a peer whose pid (where the kernel tells it) is not the one it
// says.
func AcceptLink(ctx context.Context, ln *net.UnixListener) (*LinkConn, LinkHello, error) {
	var hello LinkHello
	stop := context.AfterFunc(ctx, func() { _ = ln.SetDeadline(time.Now()) })
	c, err := ln.AcceptUnix()
	stop()
	if err != nil {
		if ctx.Err() != nil {
			return nil, hello, ctx.Err()
		}
		return nil, hello, linkErr("accept: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(linkTimeout))
	if err := readJSON(c, &hello); err != nil {
		c.Close()
		return nil, hello, linkErr("hello: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	if pid, ok := peerPID(c); ok && pid != hello.PID {
		c.Close()
		return nil, hello, linkErr("the process connected (pid %d) says it is pid %d", pid, hello.PID)
	}
	if hello.Version != LinkVersion {
		c.Close()
		return nil, hello, linkErr("generation (pid %d) speaks link version %d, this supervisor %d", hello.PID, hello.Version, LinkVersion)
	}
	return &LinkConn{c: c}, hello, nil
}

// Give sends a generation what it inherits (supervisor side). The items
// stay the caller's.
func (l *LinkConn) Give(h *Handed) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	_ = l.c.SetWriteDeadline(time.Now().Add(linkTimeout))
	defer l.c.SetWriteDeadline(time.Time{})
	if err := sendHanded(l.c, h); err != nil {
		return l.fail(err)
	}
	return nil
}

// Take asks the generation for its state and named files (supervisor
// side). When the app could not make its state, the error wraps
// ErrNoState.
func (l *LinkConn) Take(ctx context.Context) (*Handed, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return nil, err
	}
	stop := l.deadline(ctx)
	defer stop()
	if err := writeJSON(l.c, LinkRequest{Op: LinkHandover}); err != nil {
		return nil, l.fail(linkErr("asking for the state: %v", err))
	}
	var rep LinkReply
	if err := readJSON(l.c, &rep); err != nil {
		return nil, l.fail(linkErr("waiting for the state: %v", err))
	}
	if !rep.OK {
		return nil, fmt.Errorf("%w: %s", ErrNoState, rep.Error) // a whole answer: the link stays usable
	}
	h, err := recvHanded(l.c, MaxStateLimit)
	if err != nil {
		return nil, l.fail(err)
	}
	return h, nil
}

// Drain asks the generation to stop accepting and drain (supervisor side).
func (l *LinkConn) Drain(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	stop := l.deadline(ctx)
	defer stop()
	if err := writeJSON(l.c, LinkRequest{Op: LinkDrain}); err != nil {
		return l.fail(linkErr("drain: %v", err))
	}
	var rep LinkReply
	if err := readJSON(l.c, &rep); err != nil {
		return l.fail(linkErr("drain: %v", err))
	}
	if !rep.OK {
		return linkErr("drain refused: %s", rep.Error)
	}
	return nil
}

// deadline bounds an exchange by linkTimeout and ctx.
func (l *LinkConn) deadline(ctx context.Context) (stop func()) {
	_ = l.c.SetDeadline(time.Now().Add(linkTimeout))
	after := context.AfterFunc(ctx, func() { _ = l.c.SetDeadline(time.Now()) })
	return func() {
		after()
		_ = l.c.SetDeadline(time.Time{})
	}
}

// sendHanded writes the handoff message and state, then the named files'
// descriptors in one message of one byte.
func sendHanded(c *net.UnixConn, h *Handed) error {
	if h == nil {
		h = &Handed{}
	}
	msg := h.Msg
	msg.Files = msg.Files[:0:0]
	fds := make([]int, 0, len(h.Items))
	for _, it := range h.Items {
		if it.File == nil {
			return linkErr("file %q has no descriptor", it.Desc.Name)
		}
		msg.Files = append(msg.Files, it.Desc)
		fds = append(fds, int(it.File.Fd()))
	}
	if err := WriteHandoff(c, msg, h.State); err != nil {
		return linkErr("sending the handoff: %v", err)
	}
	if len(fds) == 0 {
		return nil
	}
	if _, _, err := c.WriteMsgUnix([]byte{'F'}, unix.UnixRights(fds...), nil); err != nil {
		return linkErr("sending %d files: %v", len(fds), err)
	}
	return nil
}

// recvHanded reads what sendHanded wrote.
func recvHanded(c *net.UnixConn, maxState int64) (*Handed, error) {
	msg, state, err := ReadHandoff(c, maxState)
	if err != nil {
		if errors.Is(err, ErrVersion) || errors.Is(err, ErrStateTooLarge) || errors.Is(err, ErrStateCorrupt) {
			return nil, err
		}
		return nil, linkErr("%v", err)
	}
	h := &Handed{Msg: msg, State: state}
	if len(msg.Files) == 0 {
		return h, nil
	}
	var b [1]byte
	oob := make([]byte, unix.CmsgSpace(4*len(msg.Files)))
	_, oobn, flags, _, err := c.ReadMsgUnix(b[:], oob)
	if err != nil {
		return nil, linkErr("receiving %d files: %v", len(msg.Files), err)
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
	if len(fds) != len(msg.Files) || flags&unix.MSG_CTRUNC != 0 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, linkErr("expected %d files, got %d", len(msg.Files), len(fds))
	}
	for i, d := range msg.Files {
		h.Items = append(h.Items, Item{Desc: d, File: os.NewFile(uintptr(fds[i]), "file:"+d.Name)})
	}
	return h, nil
}
