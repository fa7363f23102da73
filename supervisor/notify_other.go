//go:build unix && !linux

package supervisor

import "net"

// Outside Linux a datagram does not say who sent it (no SCM_CREDENTIALS;
// LOCAL_PEERCRED works on connected stream sockets only): any process that
// can reach the notify socket is heard. The socket sits in the runtime
// directory (0700) with mode 0600, so that is a process of the service's
// own user (or root); the protection against one of those is Linux-only.

// notifySenderKnown tells whether readNotifyMsg reports the sender's pid.
const notifySenderKnown = false

func enableNotifyCreds(*net.UnixConn) error { return nil }

// readNotifyMsg reads one datagram into buf; pid is always 0 (unknown).
func readNotifyMsg(c *net.UnixConn, buf, _ []byte) (n, pid int, err error) {
	n, err = c.Read(buf)
	return n, 0, err
}
