package supervisor

import (
	"context"
	"net"
	"os"
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
		if n, ok := acceptQueue(p.file); ok && n == 0 {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// acceptQueue is the number of connections waiting in the accept queue of
// the listening socket f (tcpi_unacked of a listener); ok is false where
// the system does not say.
func acceptQueue(f *os.File) (n int, ok bool) {
	// Through SyscallConn, not Fd: Fd would switch the socket, which the
	// app shares, to blocking mode.
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	if cerr := rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); cerr != nil || err != nil {
		return 0, false
	}
	return int(info.Unacked), true
}
