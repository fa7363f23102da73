package handoff

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/baton-go/baton/internal/winpipe"
	"github.com/baton-go/baton/internal/winsock"
	"golang.org/x/sys/windows"
)

// connsSupported: connections travel as WSADuplicateSocket protocol info
// made for the pid at the other end of the channel (a named pipe, whose
// peer pid the kernel tells), as listeners do. After the message, the
// channel carries n blocks of winsock.ProtocolInfoSize bytes.
//
// Inside a process a received connection is an *os.File over a plain
// handle to its socket (winsock.ConnHandleFromProtocolInfo): closing the
// file drops this process's copy, FileConn serves a copy of its own
// (winsock.EventConn: the socket stays on the completion port of the
// process that accepted it, so it is served through events), and the
// supervisor's relay passes it on with sendFiles.
const connsSupported = true

// FileConn returns a connection serving the socket f, a connection passed
// by a previous generation (received by TakeConns's or LinkConnsHooks's
// Take). f stays the caller's to close.
func FileConn(f *os.File) (net.Conn, error) {
	c, err := winsock.ConnFromSocket(windows.Handle(f.Fd()))
	if err != nil {
		return nil, err
	}
	return c, nil
}

// duplicator is a connection whose socket can be duplicated for another
// process: winsock.Conn (accepted here) and winsock.EventConn (passed to
// us).
type duplicator interface {
	Duplicate(pid uint32) ([]byte, error)
}

// connDuplicator finds the duplicator under wrappers that expose the
// accepted connection (NetConn, as httpdrain's).
func connDuplicator(c net.Conn) (duplicator, bool) {
	for range 8 {
		if d, ok := c.(duplicator); ok {
			return d, true
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil, false
		}
		c = w.NetConn()
	}
	return nil, false
}

// sendConns duplicates the sockets of conns for the peer's pid and sends
// them in one write. A connection that cannot be duplicated is sent as
// zeros (the peer fails to rebuild it and refuses the batch, closing the
// copies it did get: the channel stays in step) and fails the send.
func sendConns(ch net.Conn, conns []net.Conn) error {
	pid, err := peerPID(ch)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, len(conns)*winsock.ProtocolInfoSize)
	var first error
	for _, c := range conns {
		var info []byte
		d, ok := connDuplicator(c)
		if !ok {
			err = fmt.Errorf("connection %T has no socket to duplicate", c)
		} else {
			info, err = d.Duplicate(pid)
		}
		if err != nil {
			first = cmp.Or(first, err)
			info = make([]byte, winsock.ProtocolInfoSize)
		}
		buf = append(buf, info...)
	}
	if _, err := ch.Write(buf); err != nil {
		return fmt.Errorf("sending %d connections: %w", len(conns), err)
	}
	if first != nil {
		return fmt.Errorf("duplicating connections for pid %d: %w", pid, first)
	}
	return nil
}

// sendFiles duplicates the sockets files carry (recvConns made them) for
// the peer's pid and sends them, as sendConns.
func sendFiles(ch net.Conn, files []*os.File) error {
	pid, err := peerPID(ch)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, len(files)*winsock.ProtocolInfoSize)
	var first error
	for _, f := range files {
		info, err := winsock.Duplicate(windows.Handle(f.Fd()), pid)
		if err != nil {
			first = cmp.Or(first, err)
			info = make([]byte, winsock.ProtocolInfoSize)
		}
		buf = append(buf, info...)
	}
	if _, err := ch.Write(buf); err != nil {
		return fmt.Errorf("sending %d connections: %w", len(files), err)
	}
	if first != nil {
		return fmt.Errorf("duplicating connections for pid %d: %w", pid, first)
	}
	return nil
}

// recvConns receives the n sockets sendConns or sendFiles sent. Each was
// made in this process by the sender, so each block read is rebuilt and,
// on any failure, closed again: none is left behind to keep a connection
// open that its sender drains.
func recvConns(ch net.Conn, n int) ([]*os.File, error) {
	size := winsock.ProtocolInfoSize
	buf := make([]byte, n*size)
	got, rerr := io.ReadFull(ch, buf)
	files := make([]*os.File, 0, n)
	var first error
	for i := 0; (i+1)*size <= got; i++ {
		h, err := winsock.ConnHandleFromProtocolInfo(buf[i*size : (i+1)*size])
		if err != nil {
			first = cmp.Or(first, err)
			continue
		}
		files = append(files, os.NewFile(uintptr(h), "baton-conn"))
	}
	if rerr == nil && first == nil {
		return files, nil
	}
	for _, f := range files {
		f.Close()
	}
	if rerr != nil {
		return nil, fmt.Errorf("receiving %d connections: %w", n, rerr)
	}
	return nil, fmt.Errorf("rebuilding %d connections: %w", n, first)
}

// peerPID is the pid at the other end of the channel, from the kernel: the
// client's on the server end (a parent's handoff pipe, the supervisor's
// link), the server's on the client end (a generation's link).
func peerPID(ch net.Conn) (uint32, error) {
	self := uint32(os.Getpid())
	pid, err := winpipe.ClientPID(ch)
	if err != nil {
		pid, err = winpipe.ServerPID(ch)
	}
	if err != nil {
		return 0, fmt.Errorf("the pid at the other end of the channel: %w", err)
	}
	if pid == 0 || pid == self {
		return 0, errors.New("the pid at the other end of the channel is unknown")
	}
	return pid, nil
}
