package supervisor

import (
	"context"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

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
