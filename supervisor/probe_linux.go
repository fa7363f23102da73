package supervisor

import (
	"context"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/baton-go/baton/internal/handoff"
	"golang.org/x/sys/unix"
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

// accepted connects to the probe socket and reports whether the app took
// the connection out of the accept queue: a connect alone succeeds as soon
// as the kernel queues it, app or no app. For a listening socket, Linux
// reports the accept-queue length in tcpi_unacked.
func (p *probeSocket) accepted(ctx context.Context) bool {
	c, err := net.DialTimeout("tcp", p.addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		info, err := unix.GetsockoptTCPInfo(int(p.file.Fd()), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil && info.Unacked == 0 {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}
