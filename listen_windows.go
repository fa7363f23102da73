package baton

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/winsock"
)

// On Windows nothing is inherited: listening sockets are created by baton's
// own winsock.Listener (never on an I/O completion port, SO_EXCLUSIVEADDRUSE)
// and duplicated for the child with WSADuplicateSocket; the child rebuilds
// them from the protocol info in FileDesc.Data. See notes/windows.md.

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

// UDP uses Go's own sockets: net.FilePacketConn rebuilds them in the child
// (Go >= 1.25 on Windows 8.1+). Wine 8.0 can open neither UDP sockets nor
// that path, so this is only exercised on real Windows.
func newPacketConn(network, addr string) (net.PacketConn, handoff.Item, error) {
	if network == "unixgram" {
		return nil, handoff.Item{}, fmt.Errorf("listen %s %s: %w: baton does not hand over unix sockets on Windows", network, addr, ErrUnsupported)
	}
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		return nil, handoff.Item{}, err
	}
	var sock uintptr
	raw, err := pc.(syscall.Conn).SyscallConn()
	if err == nil {
		err = raw.Control(func(fd uintptr) { sock = fd })
	}
	if err != nil {
		pc.Close()
		return nil, handoff.Item{}, err
	}
	return pc, handoff.Item{Socket: sock}, nil
}

func inheritPacketConn(p pooled) (net.PacketConn, handoff.Item, error) {
	s, err := winsock.SocketFromProtocolInfo(p.desc.Data)
	if err != nil {
		return nil, handoff.Item{}, err
	}
	f := os.NewFile(uintptr(s), p.desc.Network+":"+p.desc.Addr)
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, handoff.Item{}, err
	}
	var sock uintptr
	raw, err := pc.(syscall.Conn).SyscallConn()
	if err == nil {
		err = raw.Control(func(fd uintptr) { sock = fd })
	}
	return pc, handoff.Item{Socket: sock}, err
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
