//go:build unix

package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

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
	l := &LinkConn{c: c}
	_ = l.c.SetDeadline(time.Now().Add(timeout))
	if err := writeJSON(l.c, LinkHello{Version: LinkVersion, PID: os.Getpid(), Conns: connsSupported}); err != nil {
		l.c.Close()
		return nil, nil, linkErr("hello: %v", err)
	}
	h, err := recvHanded(l.c, maxState)
	if err != nil {
		l.c.Close()
		return nil, nil, err
	}
	_ = l.c.SetDeadline(time.Time{})
	l.conns = h.Msg.Conns && connsSupported // the supervisor carries connections
	return l, h, nil
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

// AcceptLink waits until a process connects to ln and says hello (or ctx
// ends), and returns that one connection: a caller that expects a given
// process calls it again when hello.PID is another's (or on an error
// other than ctx's), so that a process connecting first does not take the
// generation's place. A generation that speaks another link version is
// refused, and so is a peer whose pid (where the kernel tells it: Linux
// SO_PEERCRED, macOS LOCAL_PEERPID, FreeBSD 13+ LOCAL_PEERCRED) is not the
// one it says; elsewhere the pid in the hello is the peer's word. The
// hello is awaited for at most linkTimeout (a generation says it at once).
func AcceptLink(ctx context.Context, ln *net.UnixListener) (*LinkConn, LinkHello, error) {
	var hello LinkHello
	stop := context.AfterFunc(ctx, func() { _ = ln.SetDeadline(time.Now()) })
	c, err := ln.AcceptUnix()
	stop()
	if err != nil {
		if ctx.Err() != nil {
			return nil, hello, ctx.Err()
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, hello, fmt.Errorf("%w: accept: %w", ErrLink, err)
		}
		return nil, hello, linkErr("accept: %v", err)
	}
	kpid, known := peerPID(c)
	return acceptHello(ctx, c, kpid, known)
}

// sendHanded writes the handoff message and state, then the named files'
// descriptors in one message of one byte.
func sendHanded(conn net.Conn, _ int, h *Handed) error {
	c := conn.(*net.UnixConn)
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
func recvHanded(conn net.Conn, maxState int64) (*Handed, error) {
	c := conn.(*net.UnixConn)
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
	fds, err := recvRights(c, len(msg.Files))
	if err != nil {
		return nil, linkErr("receiving %d files: %v", len(msg.Files), err)
	}
	for i, d := range msg.Files {
		h.Items = append(h.Items, Item{Desc: d, File: os.NewFile(uintptr(fds[i]), "file:"+d.Name)})
	}
	return h, nil
}
