package handoff

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/baton-go/baton/internal/winpipe"
	"github.com/baton-go/baton/internal/winsock"
	"golang.org/x/sys/windows"
)

// The supervisor link on Windows (protocol in link.go) runs over a named
// pipe that only this user, SYSTEM and Administrators may open
// (winpipe.OwnerOnlySDDL). Each end knows the other's pid from the kernel:
// the supervisor checks that the client's pid (GetNamedPipeClientProcessId)
// is the one its hello says, the generation asks for the server's
// (GetNamedPipeServerProcessId). Named files do not travel beside the
// frames as they do on Unix (SCM_RIGHTS): the sender duplicates each
// handle into the peer process (DuplicateHandle) and its value there is in
// FileDesc.Data (8 bytes, little endian), as on the handoff channel.
// Sockets (Item.Socket) travel as WSADuplicateSocket protocol info in
// FileDesc.Data; the receiver rebuilds them (Item.File stays nil).

// linkPipePrefix starts the name of every link pipe; the control
// endpoint's pipe is `\\.\pipe\baton-NAME`, so a link never takes its name.
const linkPipePrefix = `\\.\pipe\baton-link-`

// LinkListener is the supervisor's end of one generation's link before the
// generation connects (ListenLink, AcceptLink).
type LinkListener struct {
	ln   *winpipe.Listener
	path string

	mu      sync.Mutex
	pending chan linkAccepted // an Accept still running for an AcceptLink that gave up
	closed  bool
}

type linkAccepted struct {
	c   net.Conn
	err error
}

// ListenLink creates the supervisor's end of a generation's link: on
// Windows a named pipe `\\.\pipe\baton-link-<name>-<random>` (name must not
// contain a backslash), on Unix a unix socket at the path name, mode 0600.
// It returns the listener and the value of EnvLink for the generation.
func ListenLink(name string) (*LinkListener, string, error) {
	if name == "" || strings.ContainsRune(name, '\\') {
		return nil, "", linkErr("invalid link name %q", name)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	path := linkPipePrefix + name + "-" + hex.EncodeToString(rnd[:])
	sddl, err := winpipe.OwnerOnlySDDL()
	if err != nil {
		return nil, "", linkErr("%v", err)
	}
	ln, err := winpipe.Listen(path, sddl)
	if err != nil {
		return nil, "", linkErr("%v", err)
	}
	return &LinkListener{ln: ln, path: path}, path, nil
}

// Addr returns the pipe's path.
func (l *LinkListener) Addr() net.Addr { return l.ln.Addr() }

// Close stops listening. A link already accepted stays open.
func (l *LinkListener) Close() error {
	l.mu.Lock()
	l.closed = true
	pending := l.pending
	l.pending = nil
	l.mu.Unlock()
	err := l.ln.Close()
	if pending != nil {
		// A client accepted at the moment of the close is nobody's.
		go func() {
			if r := <-pending; r.c != nil {
				r.c.Close()
			}
		}()
	}
	return err
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
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := winpipe.Dial(ctx, path)
	if err != nil {
		return nil, nil, linkErr("connecting to %s: %v", path, err)
	}
	pid, err := winpipe.ServerPID(c)
	if err != nil || pid == 0 {
		c.Close()
		return nil, nil, linkErr("the pid of the supervisor at %s: %v", path, err)
	}
	l := &LinkConn{c: c, peer: int(pid)}
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := writeJSON(c, LinkHello{Version: LinkVersion, PID: os.Getpid(), Conns: connsSupported}); err != nil {
		c.Close()
		return nil, nil, linkErr("hello: %v", err)
	}
	h, err := recvHanded(c, maxState)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Time{})
	l.conns = h.Msg.Conns && connsSupported // the supervisor carries connections
	return l, h, nil
}

// AcceptLink waits until a generation connects to ln and says hello (or
// ctx ends; a client that connects later is kept for the next AcceptLink).
// A generation that speaks another link version is refused, and so is a
// client whose pid (from the kernel) is not the one it says. Calls on one
// listener must not overlap.
func AcceptLink(ctx context.Context, ln *LinkListener) (*LinkConn, LinkHello, error) {
	var hello LinkHello
	ln.mu.Lock()
	if ln.closed {
		ln.mu.Unlock()
		return nil, hello, linkErr("accept: %v", net.ErrClosed)
	}
	got := ln.pending
	if got == nil {
		got = make(chan linkAccepted, 1)
		go func() {
			c, err := ln.ln.Accept()
			got <- linkAccepted{c, err}
		}()
		ln.pending = got
	}
	ln.mu.Unlock()
	var r linkAccepted
	select {
	case r = <-got:
		ln.mu.Lock()
		if ln.pending == got {
			ln.pending = nil
		}
		ln.mu.Unlock()
	case <-ctx.Done():
		return nil, hello, ctx.Err()
	}
	if r.err != nil {
		return nil, hello, linkErr("accept: %v", r.err)
	}
	c := r.c
	pid, err := winpipe.ClientPID(c)
	if err != nil || pid == 0 {
		c.Close()
		return nil, hello, linkErr("the pid of the process connected: %v", err)
	}
	return acceptHello(ctx, c, int(pid), true)
}

// sendHanded writes the handoff message and the state, with each named
// file duplicated into process peer (and each socket duplicated for it).
// If the message cannot be written, the handles made in peer are closed
// there again; once written, they are the peer's.
func sendHanded(c net.Conn, peer int, h *Handed) error {
	if h == nil {
		h = &Handed{}
	}
	msg := h.Msg
	msg.Files = msg.Files[:0:0]
	msg.StderrRelay = nil
	var made []windows.Handle
	for _, it := range h.Items {
		d := it.Desc
		switch {
		case it.File != nil:
			v, err := duplicateInto(windows.Handle(it.File.Fd()), peer)
			if err != nil {
				closeInProcess(peer, made)
				return linkErr("handing file %q to pid %d: %v", d.Name, peer, err)
			}
			made = append(made, v)
			d.Data = binary.LittleEndian.AppendUint64(nil, uint64(v))
		case it.Socket != 0:
			info, err := winsock.Duplicate(windows.Handle(it.Socket), uint32(peer))
			if err != nil {
				closeInProcess(peer, made)
				return linkErr("handing %s %s to pid %d: %v", d.Network, d.Addr, peer, err)
			}
			d.Data = info
		default:
			closeInProcess(peer, made)
			return linkErr("file %q has no handle", d.Name)
		}
		msg.Files = append(msg.Files, d)
	}
	if err := WriteHandoff(c, msg, h.State); err != nil {
		closeInProcess(peer, made)
		return linkErr("sending the handoff: %v", err)
	}
	return nil
}

// recvHanded reads what sendHanded wrote. Named files become *os.File
// over the handles the sender made in this process.
func recvHanded(c net.Conn, maxState int64) (*Handed, error) {
	msg, state, err := ReadHandoff(c, maxState)
	if err != nil {
		if errors.Is(err, ErrVersion) || errors.Is(err, ErrStateTooLarge) || errors.Is(err, ErrStateCorrupt) {
			return nil, err
		}
		return nil, linkErr("%v", err)
	}
	h := &Handed{Msg: msg, State: state}
	for _, d := range msg.Files {
		if d.Kind == KindFile && len(d.Data) != 8 {
			return nil, linkErr("file %q: no handle in the message", d.Name)
		}
	}
	for _, d := range msg.Files {
		it := Item{Desc: d}
		if d.Kind == KindFile {
			it.File = os.NewFile(uintptr(binary.LittleEndian.Uint64(d.Data)), "file:"+d.Name)
		}
		h.Items = append(h.Items, it)
	}
	return h, nil
}

// closeInProcess closes handles that this process made in process pid
// (DuplicateHandle with DUPLICATE_CLOSE_SOURCE).
func closeInProcess(pid int, hs []windows.Handle) {
	if len(hs) == 0 {
		return
	}
	p, err := windows.OpenProcess(windows.PROCESS_DUP_HANDLE, false, uint32(pid))
	if err != nil {
		return
	}
	defer windows.CloseHandle(p)
	for _, h := range hs {
		_ = windows.DuplicateHandle(p, h, 0, nil, 0, false, windows.DUPLICATE_CLOSE_SOURCE)
	}
}
