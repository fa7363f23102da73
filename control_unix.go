//go:build unix

package baton

import (
	"net"
	"os"
	"syscall"

	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/handoff"
)

// On Unix the control socket itself is handed over like any listener, so
// there is never a moment without one: requests queue in its backlog.
type fdControl struct{ file *os.File }

func openControlEndpoint(name string, inherited *pooled) (controlEndpoint, error) {
	if inherited != nil {
		return fdControl{inherited.file}, nil
	}
	ln, err := ctl.Listen(name)
	if err != nil {
		return nil, err
	}
	defer ln.Close() // our duplicate keeps the socket
	f, err := handoff.DupFile(ln.(syscall.Conn), "baton-control")
	if err != nil {
		return nil, err
	}
	return fdControl{f}, nil
}

func (c fdControl) listen() (net.Listener, error) { return net.FileListener(c.file) }
func (c fdControl) item() (handoff.Item, bool) {
	return handoff.Item{Desc: controlDesc, File: c.file}, true
}
func (c fdControl) close() { c.file.Close() }
