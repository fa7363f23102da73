package supervisor

import (
	"net"

	"golang.org/x/sys/unix"
)

// The sender of a notify message, on Linux: the kernel attaches its
// credentials (SCM_CREDENTIALS) to every datagram once SO_PASSCRED is set
// on the receiving socket, whatever the sender did, so a message is
// counted only when it comes from the generation's own process (the
// activator execs the app: same pid). This matches systemd's
// NotifyAccess=main: a helper that calls systemd-notify from another
// process is not heard.

// notifySenderKnown tells whether readNotifyMsg reports the sender's pid.
const notifySenderKnown = true

// enableNotifyCreds asks the kernel for the sender's credentials on every
// datagram c receives (set before the generation starts).
func enableNotifyCreds(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil {
		return err
	}
	return serr
}

// readNotifyMsg reads one datagram into buf; pid is its sender's (0 when
// the kernel did not tell: a sender in a pid namespace this one cannot
// see). Descriptors sent along (FDSTORE=1) are closed: the supervisor
// keeps none.
func readNotifyMsg(c *net.UnixConn, buf, oob []byte) (n, pid int, err error) {
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return 0, 0, err
	}
	cmsgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
	if perr != nil {
		return n, 0, nil
	}
	for i := range cmsgs {
		m := &cmsgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_CREDENTIALS:
			if cred, err := unix.ParseUnixCredentials(m); err == nil {
				pid = int(cred.Pid)
			}
		case unix.SCM_RIGHTS:
			if fds, err := unix.ParseUnixRights(m); err == nil {
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
	}
	return n, pid, nil
}
