package handoff

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerPID is the pid of the process at the other end of c, as the kernel
// saw it connect (LOCAL_PEERPID); ok is false where it cannot tell.
func peerPID(c *net.UnixConn) (pid int, ok bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		pid, gerr = unix.GetsockoptInt(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERPID)
	}); err != nil || gerr != nil {
		return 0, false
	}
	return pid, true
}
