//go:build unix && !linux

package supervisor

import (
	"context"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/baton-go/baton/internal/handoff"
)

const probeFDName = "baton-probe"

type probeSocket struct {
	file *os.File
	addr string
}

func newProbeSocket() (*probeSocket, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	f, err := handoff.DupFile(ln.(syscall.Conn), probeFDName)
	if err != nil {
		return nil, err
	}
	return &probeSocket{file: f, addr: ln.Addr().String()}, nil
}

func (p *probeSocket) close() { p.file.Close() }

// accepted: without Linux's accept-queue length, a TCP probe can only tell
// that the socket exists; it is as weak as a delay. Prefer notify or http.
func (p *probeSocket) accepted(ctx context.Context) bool {
	c, err := net.DialTimeout("tcp", p.addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
