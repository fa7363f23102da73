package baton

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/baton-go/baton/internal/handoff"
)

// entry is one socket or file this generation owns and will hand over.
type entry struct {
	desc handoff.FileDesc
	item handoff.Item // what is passed to the next generation

	ln   net.Listener   // KindListener: what the app got
	pc   net.PacketConn // KindPacket
	file *os.File       // KindFile

	unixPath string // a unix socket file to unlink when the last generation stops
}

func (e *entry) String() string {
	if e.desc.Kind == handoff.KindFile {
		return "file " + e.desc.Name
	}
	return e.desc.Network + " " + e.desc.Addr
}

// pooled is an inherited file not yet claimed by the app.
type pooled struct {
	desc  handoff.FileDesc
	file  *os.File // nil where the platform passes data instead (Windows sockets)
	local net.Addr // for socket-activated sockets: their bound address (nil otherwise)
	// standsFor: under baton run --proxy, the public socket this private
	// one stands for: the app asks for that address and gets this socket.
	standsFor net.Addr
}

func (p pooled) close() {
	if p.file != nil {
		p.file.Close()
		return
	}
	closeUnclaimed(p)
}

// Listen returns a stream listener for network ("tcp", "tcp4", "tcp6" or
// "unix") and addr: the one inherited from the previous generation (or from
// systemd socket activation) when it matches, a new one otherwise. Never
// close the listener to "pass" it on: baton hands it over and closes this
// generation's copy itself when the next generation is ready.
//
// In a generation started by an upgrade (or by baton run), Accept waits
// until Ready has succeeded: until then the previous generation takes every
// connection, so none is lost if this one is called off. Serve on the
// listener before calling Ready, as usual.
//
// The listener is of one baton type (unexported) in every generation, on
// every platform, whether the socket was created, inherited from a previous
// generation, socket-activated by systemd or given by baton run: code that
// type-asserts it behaves the same after an upgrade. It is not a
// *net.TCPListener or *net.UnixListener (no File, SyscallConn or
// AcceptTCP). What it satisfies:
//
//   - net.Listener; Addr is a *net.TCPAddr (tcp, tcp4, tcp6) or a
//     *net.UnixAddr (unix);
//   - interface{ SetDeadline(time.Time) error }: on Unix it sets the
//     deadline of Accept, as on *net.TCPListener and *net.UnixListener, and
//     it also bounds an Accept still waiting for Ready (the error then
//     satisfies errors.Is(err, os.ErrDeadlineExceeded) and is a net.Error
//     with Timeout true); on Windows it returns an error wrapping
//     ErrUnsupported.
//
// After Close, Stop or the handover, Accept returns an error satisfying
// errors.Is(err, net.ErrClosed). The connections Accept returns are
// *net.TCPConn or *net.UnixConn on Unix in every generation; on Windows
// they are baton's own net.Conn (with deadlines and CloseWrite) in every
// generation.
func (u *Upgrader) Listen(network, addr string) (net.Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "unix":
	default:
		return nil, fmt.Errorf("baton: Listen: network %q not supported (tcp, tcp4, tcp6, unix)", network)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stopped || u.handedOver {
		return nil, fmt.Errorf("baton: Listen %s %s: %w", network, addr, ErrStopped)
	}
	e := &entry{desc: handoff.FileDesc{Kind: handoff.KindListener, Network: network, Addr: addr}}
	var err error
	activated := false
	if p, ok := u.claim(e.desc); ok {
		activated = p.local != nil
		if e.ln, e.item, err = inheritListener(p); err != nil {
			p.close()
			return nil, fmt.Errorf("baton: inherited %s %s: %w", network, addr, err)
		}
	} else {
		if network == "unix" {
			removeStaleSocket(addr)
		}
		if e.ln, e.item, err = newListener(network, addr); err != nil {
			return nil, fmt.Errorf("baton: %w", err)
		}
	}
	if ul, ok := e.ln.(*net.UnixListener); ok {
		// Whoever stops last unlinks the file, not whoever closes first; a
		// socket from systemd (or baton run) belongs to whoever made it.
		ul.SetUnlinkOnClose(false)
		if !activated {
			e.unixPath = addr
		}
	}
	// The same wrapper in every generation (see above); a first
	// generation's gate is open from the start.
	g := u.acceptGate
	if g == nil {
		g = openGate()
	}
	gl := newGatedListener(e.ln, g)
	desc := e.desc
	gl.migrate = func(conns []net.Conn) (int, error) { return u.passConns(desc, conns) }
	gl.migrationReady = u.migrationReady
	e.ln = gl
	e.item.Desc = e.desc
	u.entries = append(u.entries, e)
	return gl, nil
}

// ListenPacket returns a packet conn for network ("udp", "udp4", "udp6" or
// "unixgram") and addr, inherited or new like Listen. After a handover its
// reads fail with a deadline error (the datagrams go to the new
// generation); writes keep working until Stop, so answers in progress are
// still sent.
//
// Its dynamic type does not change between generations (created,
// inherited, socket-activated or under baton run): on Unix it is a
// *net.UDPConn (udp, udp4, udp6) or a *net.UnixConn (unixgram); on Windows
// it is baton's own net.PacketConn (with deadlines), never a *net.UDPConn.
func (u *Upgrader) ListenPacket(network, addr string) (net.PacketConn, error) {
	switch network {
	case "udp", "udp4", "udp6", "unixgram":
	default:
		return nil, fmt.Errorf("baton: ListenPacket: network %q not supported (udp, udp4, udp6, unixgram)", network)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stopped || u.handedOver {
		return nil, fmt.Errorf("baton: ListenPacket %s %s: %w", network, addr, ErrStopped)
	}
	e := &entry{desc: handoff.FileDesc{Kind: handoff.KindPacket, Network: network, Addr: addr}}
	var err error
	activated := false
	if p, ok := u.claim(e.desc); ok {
		activated = p.local != nil
		if e.pc, e.item, err = inheritPacketConn(p); err != nil {
			p.close()
			return nil, fmt.Errorf("baton: inherited %s %s: %w", network, addr, err)
		}
	} else {
		if network == "unixgram" {
			removeStaleSocket(addr)
		}
		if e.pc, e.item, err = newPacketConn(network, addr); err != nil {
			return nil, fmt.Errorf("baton: %w", err)
		}
	}
	if network == "unixgram" && !activated {
		e.unixPath = addr
	}
	e.item.Desc = e.desc
	u.entries = append(u.entries, e)
	return e.pc, nil
}

// File returns the named file inherited from the previous generation, or
// calls open to create it (for example an open log file or a lock). The
// file is handed to the next generation under the same name.
//
// The returned *os.File is the app's own, in every generation: baton keeps
// an independent duplicate (another descriptor, or handle on Windows, of
// the same open file) for the handoff. The app may close its file at any
// time without breaking the handoff, and baton closing its duplicate (at
// the handover or Stop) never closes the app's. Both share the open file's
// offset and flags, as any duplicate does. In a first generation the file
// returned is the one open returned.
func (u *Upgrader) File(name string, open func() (*os.File, error)) (*os.File, error) {
	if name == "" {
		return nil, errors.New("baton: File: empty name")
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stopped || u.handedOver {
		return nil, fmt.Errorf("baton: File %s: %w", name, ErrStopped)
	}
	for _, e := range u.entries {
		if e.desc.Kind == handoff.KindFile && e.desc.Name == name {
			return nil, fmt.Errorf("baton: File %q requested twice", name)
		}
	}
	e := &entry{desc: handoff.FileDesc{Kind: handoff.KindFile, Name: name}}
	var err error
	if p, ok := u.claim(e.desc); ok {
		if e.file, e.item, err = inheritFile(p); err != nil {
			p.close()
			return nil, fmt.Errorf("baton: inherited file %q: %w", name, err)
		}
	} else {
		f, err := open()
		if err != nil {
			return nil, fmt.Errorf("baton: File %q: %w", name, err)
		}
		if e.item, err = fileItem(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("baton: File %q: %w", name, err)
		}
		e.file = f
	}
	e.item.Desc = e.desc
	u.entries = append(u.entries, e)
	return e.file, nil
}

// claim takes the inherited (or socket-activated) file that matches desc.
func (u *Upgrader) claim(desc handoff.FileDesc) (pooled, bool) {
	for i, p := range u.pool {
		if p.desc.Kind != desc.Kind {
			continue
		}
		match := false
		switch {
		case desc.Kind == handoff.KindFile:
			match = p.desc.Name == desc.Name
		case p.standsFor != nil:
			match = sameAddr(desc.Network, desc.Addr, p.standsFor)
		case p.desc.Network == desc.Network && p.desc.Addr == desc.Addr:
			match = true
		case p.local != nil:
			match = sameAddr(desc.Network, desc.Addr, p.local)
		}
		if match {
			u.pool = append(u.pool[:i], u.pool[i+1:]...)
			return p, true
		}
	}
	return pooled{}, false
}

// sameAddr reports whether a socket bound to got serves what the app asks
// for with network and addr.
func sameAddr(network, addr string, got net.Addr) bool {
	switch g := got.(type) {
	case *net.TCPAddr:
		if network != "tcp" && network != "tcp4" && network != "tcp6" {
			return false
		}
		want, err := net.ResolveTCPAddr(network, addr)
		return err == nil && want.Port == g.Port && sameIP(want.IP, g.IP)
	case *net.UDPAddr:
		if network != "udp" && network != "udp4" && network != "udp6" {
			return false
		}
		want, err := net.ResolveUDPAddr(network, addr)
		return err == nil && want.Port == g.Port && sameIP(want.IP, g.IP)
	case *net.UnixAddr:
		return (network == "unix" || network == "unixgram") && g.Net == network && g.Name == addr
	}
	return false
}

func sameIP(want, got net.IP) bool {
	if len(want) == 0 || want.IsUnspecified() {
		// No IP at all is "every address" too: a public socket that a
		// private one stands for, given as ":8080".
		return len(got) == 0 || got.IsUnspecified()
	}
	return want.Equal(got)
}
