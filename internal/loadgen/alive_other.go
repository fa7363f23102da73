//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package loadgen

import (
	"bufio"
	"errors"
	"net"
	"os"
	"time"
)

// peerClosed reports whether an idle keep-alive connection must not be
// reused: the server closed it or sent unsolicited bytes after the last
// complete response. Portable fallback: a short read deadline instead of a
// non-blocking MSG_PEEK.
func peerClosed(c net.Conn, br *bufio.Reader) bool {
	if br.Buffered() > 0 {
		return true
	}
	if err := c.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
		return true
	}
	_, err := br.Peek(1)
	if c.SetReadDeadline(time.Time{}) != nil {
		return true
	}
	return !errors.Is(err, os.ErrDeadlineExceeded)
}
