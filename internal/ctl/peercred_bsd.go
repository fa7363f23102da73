//go:build darwin || freebsd

package ctl

import "golang.org/x/sys/unix"

// peerCred is what the kernel says about the other end of a unix socket.
type peerCred struct {
	uid int
	pid int // not known here: 0
}

// peerCredOf uses LOCAL_PEERCRED, the getpeereid(3) of these systems.
func peerCredOf(fd int) (peerCred, error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return peerCred{uid: -1}, err
	}
	return peerCred{uid: int(cred.Uid)}, nil
}
