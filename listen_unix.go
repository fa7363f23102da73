//go:build unix

package baton

import (
	"net"
	"os"
	"syscall"

	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/unixsock"
)

// On Unix every socket and file is passed as a file descriptor: we keep a
// close-on-exec duplicate of each (handoff.DupFile) to give to children.

func newListener(network, addr string) (net.Listener, handoff.Item, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, handoff.Item{}, err
	}
	f, err := handoff.DupFile(ln.(syscall.Conn), network+":"+addr)
	if err != nil {
		ln.Close()
		return nil, handoff.Item{}, err
	}
	return ln, handoff.Item{File: f}, nil
}

func inheritListener(p pooled) (net.Listener, handoff.Item, error) {
	ln, err := net.FileListener(p.file)
	if err != nil {
		return nil, handoff.Item{}, err
	}
	return ln, handoff.Item{File: p.file}, nil
}

func newPacketConn(network, addr string) (net.PacketConn, handoff.Item, error) {
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		return nil, handoff.Item{}, err
	}
	f, err := handoff.DupFile(pc.(syscall.Conn), network+":"+addr)
	if err != nil {
		pc.Close()
		return nil, handoff.Item{}, err
	}
	return pc, handoff.Item{File: f}, nil
}

func inheritPacketConn(p pooled) (net.PacketConn, handoff.Item, error) {
	pc, err := net.FilePacketConn(p.file)
	if err != nil {
		return nil, handoff.Item{}, err
	}
	return pc, handoff.Item{File: p.file}, nil
}

// closeUnclaimed: on Unix every inherited socket is a file (closed by the
// caller).
func closeUnclaimed(p pooled) {}

func fileItem(f *os.File) (handoff.Item, error) {
	d, err := handoff.DupFile(f, f.Name())
	return handoff.Item{File: d}, err
}

// inheritFile gives the app its own duplicate of an inherited file; baton
// keeps the inherited descriptor for the next generation, so that either
// may be closed without the other.
func inheritFile(p pooled) (*os.File, handoff.Item, error) {
	app, err := handoff.DupFile(p.file, p.file.Name())
	if err != nil {
		return nil, handoff.Item{}, err
	}
	return app, handoff.Item{File: p.file}, nil
}

func removeStaleSocket(path string) { unixsock.RemoveStale(path) }
