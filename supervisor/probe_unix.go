//go:build unix

package supervisor

import (
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/baton-go/baton/internal/handoff"
)

// probeFDName names the probe socket in LISTEN_FDNAMES. An app that serves
// every socket it is given (the usual way) serves it too.
const probeFDName = "baton-probe"

// probeSocket is a loopback listening socket handed to one generation only,
// so that a readiness probe is answered by that generation and not by an
// older one sharing the service's sockets.
type probeSocket struct {
	file *os.File // our copy
	addr string
	once sync.Once
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

func (p *probeSocket) close() { p.once.Do(func() { p.file.Close() }) }
