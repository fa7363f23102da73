//go:build !unix

package proxy

import (
	"io"
	"net"
)

// fastPathSupported: without a non-blocking peek the fast path could
// neither check a pooled backend connection for late bytes nor watch a
// waiting client, so every connection is served by net/http here.
const fastPathSupported = false

func peekable(net.Conn) bool { return false }

func idleConnUsable(net.Conn) bool { return false }

func clientGone(net.Conn) bool { return false }

// awaiter: see idle_unix.go; here every request is written the usual way.
type awaiter struct{}

func newAwaiter(net.Conn) *awaiter { return nil }

func (bc *backendConn) writeAwaitingAnswer(_ []byte, check bool) (int, error) {
	if check {
		return 0, errStaleConn
	}
	return 0, nil
}

// sockReader and sockWriter: see sockio_unix.go.
func sockReader(c net.Conn) io.Reader { return c }

func sockWriter(c net.Conn) io.Writer { return c }
