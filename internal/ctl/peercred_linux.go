package ctl

import "golang.org/x/sys/unix"

// peerCred is what the kernel says about the other end of a unix socket.
type peerCred struct {
	uid int
	// pid made the listening socket (seen from a client) or connected
	// (seen from a server). A listening socket handed to the next
	// generation keeps its maker's pid, which may have exited since.
	pid int
}

func peerCredOf(fd int) (peerCred, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return peerCred{uid: -1}, err
	}
	return peerCred{uid: int(cred.Uid), pid: int(cred.Pid)}, nil
}
