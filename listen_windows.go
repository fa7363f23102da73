package baton

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/winsock"
	"golang.org/x/sys/windows"
)

// On Windows nothing is inherited: listening sockets are created by baton's
// own winsock.Listener (never on an I/O completion port, SO_EXCLUSIVEADDRUSE)
// and duplicated for the child with WSADuplicateSocket; the child rebuilds
// them from the protocol info in FileDesc.Data. See docs/windows.md.

func newListener(network, addr string) (net.Listener, handoff.Item, error) {
	if network == "unix" {
		return nil, handoff.Item{}, fmt.Errorf("listen %s %s: %w: baton does not hand over unix sockets on Windows", network, addr, ErrUnsupported)
	}
	ln, err := winsock.Listen(network, addr)
	if err != nil {
		return nil, handoff.Item{}, err
	}
	return ln, handoff.Item{Socket: uintptr(ln.Socket())}, nil
}

func inheritListener(p pooled) (net.Listener, handoff.Item, error) {
	ln, err := winsock.ListenerFromProtocolInfo(p.desc.Data)
	if err != nil {
		return nil, handoff.Item{}, err
	}
	return ln, handoff.Item{Socket: uintptr(ln.Socket())}, nil
}

// UDP sockets are baton's own too (winsock.PacketConn: never on an I/O
// completion port, reads and writes completed through events), for the
// same reason as listeners: every duplicate shares the socket's IOCP
// association.
func newPacketConn(network, addr string) (net.PacketConn, handoff.Item, error) {
	if network == "unixgram" {
		return nil, handoff.Item{}, fmt.Errorf("listen %s %s: %w: baton does not hand over unix sockets on Windows", network, addr, ErrUnsupported)
	}
	pc, err := winsock.ListenPacket(network, addr)
	if err != nil {
		return nil, handoff.Item{}, err
	}
	return pc, handoff.Item{Socket: uintptr(pc.Socket())}, nil
}

func inheritPacketConn(p pooled) (net.PacketConn, handoff.Item, error) {
	pc, err := winsock.PacketConnFromProtocolInfo(p.desc.Data)
	if err != nil {
		return nil, handoff.Item{}, err
	}
	return pc, handoff.Item{Socket: uintptr(pc.Socket())}, nil
}

// closeUnclaimed closes a socket the parent duplicated for us that this
// generation does not use: the duplicate exists in this process as soon as
// the parent made it, so it has to be rebuilt to be closed (else the port
// keeps queueing connections nobody accepts).
func closeUnclaimed(p pooled) {
	if len(p.desc.Data) == 0 {
		return
	}
	switch p.desc.Kind {
	case handoff.KindListener:
		if ln, err := winsock.ListenerFromProtocolInfo(p.desc.Data); err == nil {
			ln.Close()
		}
	case handoff.KindPacket:
		if pc, err := winsock.PacketConnFromProtocolInfo(p.desc.Data); err == nil {
			pc.Close()
		}
	}
}

// fileItem keeps baton's own duplicate of the app's file for the handoff,
// so that either may be closed without the other.
func fileItem(f *os.File) (handoff.Item, error) {
	d, err := dupFile(f)
	if err != nil {
		return handoff.Item{}, err
	}
	return handoff.Item{File: d}, nil
}

// inheritFile takes a file handle the parent duplicated into this process
// (the handoff package made it an *os.File) and gives the app its own
// duplicate; baton keeps the inherited handle for the next generation.
func inheritFile(p pooled) (*os.File, handoff.Item, error) {
	if p.file == nil {
		return nil, handoff.Item{}, errors.New("no handle in the handoff message")
	}
	app, err := dupFile(p.file)
	if err != nil {
		return nil, handoff.Item{}, err
	}
	return app, handoff.Item{File: p.file}, nil
}

// dupFile returns a new *os.File over a DuplicateHandle copy of f's handle
// (same file object: same access, offset and mode).
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var dup windows.Handle
	var derr error
	if err := rc.Control(func(h uintptr) {
		p := windows.CurrentProcess()
		derr = windows.DuplicateHandle(p, windows.Handle(h), p, &dup, 0, false, windows.DUPLICATE_SAME_ACCESS)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("duplicate %s: %w", f.Name(), os.NewSyscallError("DuplicateHandle", derr))
	}
	return os.NewFile(uintptr(dup), f.Name()), nil
}

func removeStaleSocket(path string) {}
