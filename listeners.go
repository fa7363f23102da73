package baton

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"

	"github.com/baton-go/baton/internal/handoff"
)

// entry is one socket or file this generation owns and will hand over.
type entry struct {
	desc handoff.FileDesc
	hand *os.File // our close-on-exec copy, passed to the next generation

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

// Listen returns a stream listener for network ("tcp", "tcp4", "tcp6" or
// "unix") and addr: the one inherited from the previous generation (or from
// systemd socket activation) when it matches, a new one otherwise. Never
// close the listener to "pass" it on: baton hands it over and closes this
// generation's copy itself when the next generation is ready.
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
	desc := handoff.FileDesc{Kind: handoff.KindListener, Network: network, Addr: addr}
	if f := u.claim(desc); f != nil {
		ln, err := net.FileListener(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("baton: inherited %s %s: %w", network, addr, err)
		}
		e := &entry{desc: desc, hand: f, ln: ln}
		if ul, ok := ln.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false)
			e.unixPath = addr
		}
		u.entries = append(u.entries, e)
		u.log.Debug("listener inherited", "network", network, "addr", addr)
		return ln, nil
	}
	if network == "unix" {
		removeStaleSocket(addr)
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("baton: %w", err)
	}
	e := &entry{desc: desc, ln: ln}
	if ul, ok := ln.(*net.UnixListener); ok {
		// Whoever stops last unlinks the file, not whoever closes first.
		ul.SetUnlinkOnClose(false)
		e.unixPath = addr
	}
	if e.hand, err = handoff.DupFile(ln.(syscall.Conn), desc.Network+":"+addr); err != nil && !errors.Is(err, handoff.ErrUnsupported) {
		ln.Close()
		return nil, fmt.Errorf("baton: %w", err)
	}
	u.entries = append(u.entries, e)
	return ln, nil
}

// ListenPacket returns a packet conn for network ("udp", "udp4", "udp6" or
// "unixgram") and addr, inherited or new like Listen. After a handover its
// reads fail with a deadline error (the datagrams go to the new
// generation); writes keep working until Stop, so answers in progress are
// still sent.
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
	desc := handoff.FileDesc{Kind: handoff.KindPacket, Network: network, Addr: addr}
	if f := u.claim(desc); f != nil {
		pc, err := net.FilePacketConn(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("baton: inherited %s %s: %w", network, addr, err)
		}
		e := &entry{desc: desc, hand: f, pc: pc}
		if network == "unixgram" {
			e.unixPath = addr
		}
		u.entries = append(u.entries, e)
		return pc, nil
	}
	if network == "unixgram" {
		removeStaleSocket(addr)
	}
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		return nil, fmt.Errorf("baton: %w", err)
	}
	e := &entry{desc: desc, pc: pc}
	if network == "unixgram" {
		e.unixPath = addr
	}
	if e.hand, err = handoff.DupFile(pc.(syscall.Conn), network+":"+addr); err != nil && !errors.Is(err, handoff.ErrUnsupported) {
		pc.Close()
		return nil, fmt.Errorf("baton: %w", err)
	}
	u.entries = append(u.entries, e)
	return pc, nil
}

// File returns the named file inherited from the previous generation, or
// calls open to create it (for example an open log file or a lock). The
// file is handed to the next generation under the same name.
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
	desc := handoff.FileDesc{Kind: handoff.KindFile, Name: name}
	if f := u.claim(desc); f != nil {
		u.entries = append(u.entries, &entry{desc: desc, hand: f, file: f})
		return f, nil
	}
	f, err := open()
	if err != nil {
		return nil, fmt.Errorf("baton: File %q: %w", name, err)
	}
	e := &entry{desc: desc, file: f}
	if e.hand, err = handoff.DupFile(f, "file:"+name); err != nil && !errors.Is(err, handoff.ErrUnsupported) {
		f.Close()
		return nil, fmt.Errorf("baton: %w", err)
	}
	u.entries = append(u.entries, e)
	return f, nil
}

// claim takes the inherited (or socket-activated) file that matches desc.
func (u *Upgrader) claim(desc handoff.FileDesc) *os.File {
	for i, p := range u.pool {
		if p.desc.Kind != desc.Kind {
			continue
		}
		match := false
		switch {
		case desc.Kind == handoff.KindFile:
			match = p.desc.Name == desc.Name
		case p.desc.Network == desc.Network && p.desc.Addr == desc.Addr:
			match = true
		case p.local != nil:
			match = sameAddr(desc.Network, desc.Addr, p.local)
		}
		if match {
			u.pool = append(u.pool[:i], u.pool[i+1:]...)
			return p.file
		}
	}
	return nil
}

// pooled is an inherited file not yet claimed by the app.
type pooled struct {
	desc  handoff.FileDesc
	file  *os.File
	local net.Addr // for socket-activated sockets: their bound address
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
		return got.IsUnspecified()
	}
	return want.Equal(got)
}

// removeStaleSocket deletes a unix socket file that nobody listens on any
// more (left by a crashed service), so that binding it again works. A file
// that is not a socket, or a live socket, is left for net.Listen to report.
func removeStaleSocket(path string) {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return
	}
	// Only a refused connection proves nobody listens: a full backlog does
	// not, and a live unixgram socket answers a stream dial with EPROTOTYPE.
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return
	}
	os.Remove(path)
}

func itoa(i int) string { return strconv.Itoa(i) }
