package handoff

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerPID is the pid of the process at the other end of c, as the kernel
// saw it connect (SO_PEERCRED); ok is false where it cannot tell.
func peerPID(c *net.UnixConn) (pid int, ok bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *unix.Ucred
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		cred, gerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || gerr != nil || cred == nil {
		return 0, false
	}
	return int(cred.Pid), true
}
