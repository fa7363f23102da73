//go:build !linux

package sockstat

// Not implemented: Windows could answer the TCP part with
// GetExtendedTcpTable(TCP_TABLE_OWNER_PID_ALL), darwin with libproc
// (proc_pidfdinfo) and FreeBSD with sysctl kern.file, each a separate body of
// code to keep and test; callers fall back to their own bound instead.
func conns(pid int, tcpPorts []int, unixPaths []string) (int, error) {
	return 0, ErrUnsupported
}
