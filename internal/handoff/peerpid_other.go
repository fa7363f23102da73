//go:build unix && !linux && !darwin && !freebsd

package handoff

import "net"

// peerPID cannot tell the peer's pid here: NetBSD's LOCAL_PEEREID and
// OpenBSD's SO_PEERCRED do carry one, but baton is neither built nor tested
// on them (FreeBSD: peerpid_freebsd.go); the link then trusts the pid the
// generation says.
func peerPID(*net.UnixConn) (int, bool) { return 0, false }
