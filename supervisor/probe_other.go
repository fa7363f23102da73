//go:build unix && !linux

package supervisor

import (
	"context"
	"net"
	"os"
	"time"
)

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

// acceptQueue: the length of a listener's accept queue is not known here.
func acceptQueue(*os.File) (int, bool) { return 0, false }
