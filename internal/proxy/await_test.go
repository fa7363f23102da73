//go:build unix

package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tcpPair is a connected loopback TCP pair: near is the proxy's side, as
// a backend connection, far the backend's.
func tcpPair(t *testing.T) (near *backendConn, far net.Conn) {
	c, far := loopbackPair(t)
	// A wait that never ends fails the test instead of hanging it.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return newBackendConn(c), far
}

// bufferedNow reports whether c has bytes to read at this moment.
func bufferedNow(t *testing.T, c net.Conn) bool {
	t.Helper()
	res := peek(c, false)
	if res == peekFailed {
		t.Fatal("peek failed")
	}
	return res == peekData
}

// writeAwaitingAnswer writes the whole request and returns only once the
// answer is there: a backend that answers 50 ms late (slow on purpose;
// the test waits for no time, it checks the order) has its answer
// readable when the call returns. A version that returned after the
// write would find nothing there.
func TestWriteAwaitingAnswerReturnsWithTheAnswer(t *testing.T) {
	near, far := tcpPair(t)
	req := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, len(req))
		_, err := io.ReadFull(far, buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf)
		time.Sleep(50 * time.Millisecond) // a slow answer, not a synchronisation
		_, _ = io.WriteString(far, "HTTP/1.1 204 No Content\r\n\r\n")
	}()
	n, err := near.writeAwaitingAnswer(req, false)
	if err != nil || n != len(req) {
		t.Fatalf("wrote %d of %d: %v", n, len(req), err)
	}
	if !bufferedNow(t, near.c) {
		t.Fatal("returned before the answer was there")
	}
	if g := <-got; g != string(req) {
		t.Fatalf("backend got %q", g)
	}
	line, err := near.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 204 No Content\r\n" {
		t.Fatalf("answer %q, %v", line, err)
	}
}

// A request larger than the socket takes at once is written in part (or
// not at all, the socket being full), and the caller writes the rest: it
// neither blocks nor fails.
func TestWriteAwaitingAnswerShortWrite(t *testing.T) {
	near, far := tcpPair(t)
	raw, err := near.c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096) })
	req := bytes.Repeat([]byte("x"), 1<<20)
	n, err := near.writeAwaitingAnswer(req, false)
	if err != nil || n <= 0 || n >= len(req) {
		t.Fatalf("a socket far smaller than the request: wrote %d of %d, %v", n, len(req), err)
	}
	// Again at once: at most part of the rest goes.
	n2, err := near.writeAwaitingAnswer(req[n:], false)
	if err != nil || n2 >= len(req)-n {
		t.Fatalf("a socket far smaller than the request, again: wrote %d of %d, %v", n2, len(req)-n, err)
	}
	n += n2
	// The rest the usual way, while the backend reads it all.
	done := make(chan int64, 1)
	go func() {
		k, _ := io.CopyN(io.Discard, far, int64(len(req)))
		done <- k
	}()
	if _, err := near.c.Write(req[n:]); err != nil {
		t.Fatal(err)
	}
	if k := <-done; k != int64(len(req)) {
		t.Fatalf("backend read %d of %d", k, len(req))
	}
}

// A backend that closed the connection before the request: the write
// goes out (the socket is only half closed), and the wait ends with the
// backend's reset or end instead of hanging; the read after it says so.
func TestWriteAwaitingAnswerBackendClosed(t *testing.T) {
	near, far := tcpPair(t)
	far.Close()
	waitFor(t, "the backend's end at the proxy", func() bool { return peek(near.c, false) == peekGone })
	req := []byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nonce")
	if _, err := near.writeAwaitingAnswer(req, false); err != nil && !strings.Contains(err.Error(), "broken pipe") && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("unexpected error %v", err)
	}
	if _, err := bufio.NewReader(near.c).ReadByte(); err == nil {
		t.Fatal("read a byte from a closed backend")
	}
}

// A pooled connection (check) whose backend half-closed it and still
// reads, or wrote to it while it was idle, gets nothing: errStaleConn,
// and the backend reads no byte of the request (it would have answered
// nothing, and no reset would have ended the wait).
func TestWriteAwaitingAnswerStaleConn(t *testing.T) {
	for _, how := range []string{"half-closed", "late bytes"} {
		t.Run(how, func(t *testing.T) {
			near, far := tcpPair(t)
			if how == "half-closed" {
				if err := far.(*net.TCPConn).CloseWrite(); err != nil {
					t.Fatal(err)
				}
			} else if _, err := io.WriteString(far, "HTTP/1.1 200 OK\r\n"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the backend's end or bytes at the proxy", func() bool { return peek(near.c, false) != peekNothing })
			n, err := near.writeAwaitingAnswer([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nonce"), true)
			if !errors.Is(err, errStaleConn) || n != 0 {
				t.Fatalf("wrote %d, %v; want nothing, errStaleConn", n, err)
			}
			near.c.Close()
			got, _ := io.ReadAll(far)
			if len(got) != 0 {
				t.Fatalf("the backend got %q", got)
			}
		})
	}
}
