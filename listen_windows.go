package baton

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/winsock"
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

func fileItem(f *os.File) (handoff.Item, error) {
	return handoff.Item{File: f}, nil
}

// inheritFile takes a file handle the parent duplicated into this process
// (the handoff package made it an *os.File).
func inheritFile(p pooled) (*os.File, handoff.Item, error) {
	if p.file == nil {
		return nil, handoff.Item{}, errors.New("no handle in the handoff message")
	}
	return p.file, handoff.Item{File: p.file}, nil
}

func removeStaleSocket(path string) {}
