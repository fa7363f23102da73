// Package sockstat counts the connections a process holds on the sockets a
// service listens on: the figure that tells whether an old generation has
// finished draining.
//
// It is written by hand: the only maintained Go library that reads socket
// tables (gopsutil) is large, walks every process and allocates per entry to
// answer a far wider question. Here the work is one pass over the target's
// fd table and one streaming pass over the kernel's socket tables, keeping
// nothing but a set of inode numbers.
//
// Only Linux is supported; elsewhere Conns returns ErrUnsupported.
//
// What is counted (Linux):
//
//   - A TCP socket is counted when the process has a descriptor for it, its
//     local port is one of tcpPorts, and it is a connection that is not yet
//     closed: ESTABLISHED, SYN_RECV, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT,
//     LAST_ACK or CLOSING. LISTEN (the listener itself), CLOSE (dead, e.g.
//     reset) and SYN_SENT (an outgoing connect) are not. A connection the
//     process has closed lingers in FIN_WAIT*/TIME_WAIT, but orphaned and with
//     inode 0: it belongs to no process and is not counted. Client ends the
//     process dialled itself have an ephemeral local port and so do not match.
//   - A unix socket is counted when the process has a descriptor for it, it is
//     connected (SS_CONNECTED) and connection-oriented (SOCK_STREAM or
//     SOCK_SEQPACKET), and its address is one of unixPaths. Contrary to what
//     one might expect, Linux gives an accepted unix socket the address of the
//     listener it came from (unix_stream_connect copies the listener's
//     addr), so /proc/<pid>/net/unix lists accepted connections under the
//     listener's path; sock_diag netlink is not needed. The client end of
//     such a connection is unbound and has no path. Paths match exactly as
//     bound (a relative bind shows the relative path); abstract names are
//     written with a leading '@', as the net package does. A path containing
//     a newline cannot be matched.
//
// A descriptor is counted once per process that holds it. A listener inherited
// by several processes appears in each fd table (it is not counted anyway);
// an accepted connection belongs to the process that accepted it, unless that
// process forked or passed the descriptor on (SCM_RIGHTS) afterwards, in which
// case every holder counts it.
//
// The socket tables are read from /proc/<pid>/net, i.e. in the target's
// network namespace, not the caller's. They are not read atomically: a
// connection opened or closed during the call may or may not be counted,
// which suits polling until a count reaches zero.
//
// Reading another user's /proc/<pid>/fd needs privileges (same uid, or
// CAP_SYS_PTRACE); the error is then a wrapped *fs.PathError for which
// errors.Is(err, fs.ErrPermission) holds. A pid that does not exist gives
// errors.Is(err, fs.ErrNotExist).
//
// The cost is proportional to the number of descriptors of the process plus
// the number of TCP (and, when unixPaths is given, unix) sockets in its
// network namespace, and is mostly the kernel's: for a process holding 1000
// sockets (BenchmarkConns) a call takes about 15 ms on a small VM, of which
// ~9 ms is the kernel formatting /proc/net/tcp, ~3 ms walking the (nearly
// empty) TCP hash again for /proc/net/tcp6, and ~3 ms the readlinks. That is
// fine for polling a drain every 100 ms or more. Should it not be, netlink
// sock_diag with a source-port filter would let the kernel skip the
// formatting, at the price of reading only the caller's network namespace.
package sockstat

import "errors"

// ErrUnsupported is returned by Conns on platforms that give no way to
// attribute connections to a process.
var ErrUnsupported = errors.New("sockstat: counting a process's connections is not supported on this platform")

// Conns counts the connections that process pid holds on the given local TCP
// ports and unix socket paths (see the package comment for exactly which).
// ErrUnsupported where the platform gives no way.
func Conns(pid int, tcpPorts []int, unixPaths []string) (int, error) {
	return conns(pid, tcpPorts, unixPaths)
}
