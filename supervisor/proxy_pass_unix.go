//go:build unix

package supervisor

import (
	"os"
	"syscall"
)

// restoreNonblock puts the socket behind f (our duplicate of a client's)
// back in non-blocking mode. Passing it over the link took f's descriptor
// (os.File.Fd), which switched the socket, shared with the proxy's own
// net.Conn, to blocking mode: a relay on it would then block threads in
// read and write, where Close cannot reach them.
func restoreNonblock(f *os.File) {
	_ = syscall.SetNonblock(int(f.Fd()), true)
}
