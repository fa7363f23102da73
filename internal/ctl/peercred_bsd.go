//go:build darwin || freebsd

package ctl

import "golang.org/x/sys/unix"

// peerUID uses LOCAL_PEERCRED, the getpeereid(3) of these systems.
func peerUID(fd int) (int, error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return -1, err
	}
	return int(cred.Uid), nil
}
