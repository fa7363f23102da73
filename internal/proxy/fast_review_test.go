package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/testenv"
)

// Regression tests for the second review of the fast path: each one
// failed before its fix.

// clientConns is the number of client connections the fast path serves.
func clientConns(p *HTTPProxy) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// A client that leaves while its answer's body is awaited (a stream: the
// app sent the head and waits for events) ends the backend request, as
// one that leaves while the head is awaited does: the backend connection
// is closed (the app's request context is cancelled), not pooled, the
// request counted as failed and no longer in flight. Before, the proxy
// waited for the app's next bytes, holding the request in flight (a
// retired generation's drain waited on it).
func TestFastPathClientLeavesDuringStream(t *testing.T) {
	requireFastPath(t)
	testDone := make(chan struct{})
	cancelled := make(chan struct{}, 1)
	a := startApp(t, "a", 101, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-testDone:
		}
	})
	t.Cleanup(func() { close(testDone) }) // before the app's Close, which waits for its handlers
	// Raw apps: the body ends when the app closes, or is shorter than its
	// Content-Length so far; either waits for the proxy to close.
	raw := func(answer string) *evilBackend {
		return startEvil(t, func(c net.Conn, r *http.Request) {
			_, _ = io.WriteString(c, answer)
			_, _ = io.Copy(io.Discard, c) // until the proxy closes
		})
	}
	untilClose := raw("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n")
	partLength := raw("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nfirst part")
	for _, tc := range []struct {
		name    string
		backend Backend
		ended   func(t *testing.T)
	}{
		{"chunked stream", a.backend(1), func(t *testing.T) {
			select {
			case <-cancelled:
			case <-time.After(20 * time.Second):
				t.Fatal("the app's request context is not cancelled 20 s after its client left")
			}
		}},
		{"body until close", untilClose.Backend, func(t *testing.T) { untilClose.waitClosed(t, "/events") }},
		{"body shorter than its length so far", partLength.Backend, func(t *testing.T) { partLength.waitClosed(t, "/events") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := NewSet(SetOptions{})
			p, addr := startHTTP(t, set, HTTPOptions{})
			mustSet(t, set, tc.backend)
			c, br := clientConnTo(t, addr)
			if _, err := io.WriteString(c, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("head: %v %v", resp, err)
			}
			c.Close()
			tc.ended(t)
			waitFor(t, "the request counted as failed and ended", func() bool {
				return p.Failed() == 1 && set.Stats()[tc.backend.ID].InFlight == 0 && clientConns(p) == 0
			})
			if n := cleanPooled(set, tc.backend.ID); n != 0 {
				t.Errorf("%d pooled connections", n)
			}
		})
	}
}

// Streams whose parts come slower than watchDelay are watched for a
// leaving client and still relayed whole; the connections go on.
func TestFastPathSlowStreamWhileWatched(t *testing.T) {
	requireFastPath(t)
	a := startApp(t, "a", 101, func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			fmt.Fprintf(w, "part %d;", i)
			w.(http.Flusher).Flush()
			time.Sleep(2 * watchDelay) // a slow app
		}
	})
	set := NewSet(SetOptions{})
	p, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, a.backend(1))
	c, br := clientConnTo(t, addr)
	for i := range 2 {
		resp, body, err := roundTrip(t, c, br, "GET", "/")
		if err != nil || resp.StatusCode != 200 || body != "part 0;part 1;part 2;" {
			t.Fatalf("request %d: %v %q %v", i, resp, body, err)
		}
	}
	if p.Failed() != 0 || p.handedOver.Load() != 0 {
		t.Errorf("failed %d, handed over %d", p.Failed(), p.handedOver.Load())
	}
	if n := a.closed.Load(); n != 0 {
		t.Errorf("%d backend connections closed", n)
	}
}

// A client that resets its connection as its request gets an
// informational answer (103) must not count as the backend's failure,
// nor make the proxy send its GET to another backend: before, it did
// both (a client could inflate a healthy canary's connection errors and
// reach every backend with one request).
func TestFastPathClientResetOn1xx(t *testing.T) {
	requireFastPath(t)
	release := make(chan struct{})
	var hits atomic.Int64
	got := make(chan struct{}, 8)
	answer := func(c net.Conn, r *http.Request) {
		hits.Add(1)
		got <- struct{}{}
		<-release
		_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n")
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}
	b0, b1 := startEvil(t, answer), startEvil(t, answer)
	b0.ID, b1.ID = "b0", "b1"
	set := NewSet(SetOptions{})
	p, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, b0.Backend, b1.Backend)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// One byte of a next request comes along: the proxy does not watch a
	// client it has bytes from, so the 103 is what finds it gone.
	if _, err := io.WriteString(c, "GET /charge HTTP/1.1\r\nHost: x\r\n\r\nG"); err != nil {
		t.Fatal(err)
	}
	<-got
	_ = c.(*net.TCPConn).SetLinger(0)
	c.Close()
	waitFor(t, "the reset at the proxy", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for cc := range p.conns {
			return !idleConnUsable(cc.c)
		}
		return false
	})
	close(release)
	waitFor(t, "the client connection's end", func() bool { return clientConns(p) == 0 })
	st := set.Stats()
	if n := hits.Load(); n != 1 {
		t.Errorf("the backends got the client's one request %d times", n)
	}
	if st["b0"].ConnErrors != 0 || st["b1"].ConnErrors != 0 {
		t.Errorf("connection errors: b0 %d, b1 %d; want none (the client left)", st["b0"].ConnErrors, st["b1"].ConnErrors)
	}
	if p.Failed() != 1 {
		t.Errorf("failed %d, want 1", p.Failed())
	}
	if st["b0"].InFlight+st["b1"].InFlight != 0 {
		t.Errorf("in flight: b0 %d, b1 %d", st["b0"].InFlight, st["b1"].InFlight)
	}
}

// A backend connection is not pooled after an answer that has no body by
// rule but whose head announces one (HEAD, or 204/304 with a non-zero
// Content-Length or chunked): the backend may believe it has a body to
// send, and bytes it sends late could race the check of a pooled
// connection. Answers announcing nothing keep their connection.
func TestFastPathNoPoolAfterAnnouncedBodyWithoutBody(t *testing.T) {
	requireFastPath(t)
	for _, tc := range []struct {
		name, method, answer string
		pooled               bool
	}{
		{"HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", false},
		{"204 with a length", "GET", "HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\n", false},
		{"304 chunked", "GET", "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"304 with a length", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", false},
		{"204", "GET", "HTTP/1.1 204 No Content\r\n\r\n", true},
		{"304 with length 0", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEvil(t, func(c net.Conn, r *http.Request) {
				if r.URL.Path == "/first" {
					_, _ = io.WriteString(c, tc.answer)
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
			})
			set := NewSet(SetOptions{})
			p, addr := startHTTP(t, set, HTTPOptions{})
			mustSet(t, set, e.Backend)
			c, br := clientConnTo(t, addr)
			if _, _, err := roundTrip(t, c, br, tc.method, "/first"); err != nil {
				t.Fatal(err)
			}
			if _, body, err := roundTrip(t, c, br, "GET", "/second"); err != nil || body != "good" {
				t.Fatalf("next request: %q, %v", body, err)
			}
			want := int64(2)
			if tc.pooled {
				want = 1
			} else {
				e.waitClosed(t, "/first")
			}
			if n := e.conns.Load(); n != want {
				t.Errorf("%d backend connections, want %d", n, want)
			}
			if p.Failed() != 0 || p.handedOver.Load() != 0 {
				t.Errorf("failed %d, handed over %d", p.Failed(), p.handedOver.Load())
			}
		})
	}
}

// A backend that does not read a request's body cannot hold the request
// forever: writing the body stops after ClientIdle without progress, and
// the client gets 502 (the connection closed after it: its body was not
// read to the end). The app listens on a unix socket, whose buffers hold
// far less than the largest body the fast path takes (on loopback TCP the
// kernel would take all of it).
func TestFastPathBackendNotReadingBody(t *testing.T) {
	requireFastPath(t)
	sock := filepath.Join(testenv.TempDir(t), "app.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	testDone := make(chan struct{})
	t.Cleanup(func() { close(testDone); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// Reads the head only, and nothing of the body.
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				<-testDone
			}()
		}
	}()
	set := NewSet(SetOptions{})
	p, addr := startHTTP(t, set, HTTPOptions{ClientIdle: 200 * time.Millisecond})
	mustSet(t, set, Backend{ID: "deaf", Network: "unix", Addr: sock, Weight: 1})
	c, br := clientConnTo(t, addr)
	body := make([]byte, fastBodyMax)
	go func() {
		fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
		_, _ = c.Write(body)
	}()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	if resp.StatusCode != http.StatusBadGateway || !resp.Close {
		t.Errorf("%d (close %v), want 502 and close", resp.StatusCode, resp.Close)
	}
	waitFor(t, "the request ended", func() bool { return set.Stats()["deaf"].InFlight == 0 && p.Failed() == 1 })
}

// An answer head buffer grown for a large head is not kept with the
// client connection after its answer (heads may take up to 1 MiB).
func TestFastPathReleasesLargeHeadBuffer(t *testing.T) {
	requireFastPath(t)
	big := strings.Repeat("x", 8<<10)
	e := startEvil(t, func(c net.Conn, r *http.Request) {
		var b strings.Builder
		b.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
		if r.URL.Path == "/big" {
			for i := range 32 {
				fmt.Fprintf(&b, "X-Big-%d: %s\r\n", i, big)
			}
		}
		b.WriteString("\r\nok")
		_, _ = io.WriteString(c, b.String())
	})
	set := NewSet(SetOptions{})
	p, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, e.Backend)
	c, br := clientConnTo(t, addr)
	for _, path := range []string{"/small", "/big", "/small"} {
		resp, body, err := roundTrip(t, c, br, "GET", path)
		if err != nil || body != "ok" {
			t.Fatalf("%s: %q, %v", path, body, err)
		}
		if path == "/big" && resp.Header.Get("X-Big-31") != big {
			t.Fatalf("/big: the head was not relayed whole")
		}
		var cc *clientConn
		p.mu.Lock()
		for k := range p.conns {
			cc = k
		}
		p.mu.Unlock()
		// Idle again: the connection's goroutine is done with the answer.
		waitFor(t, "the connection idle", func() bool { return cc.state.Load() == connIdle })
		if n := cap(cc.resp); n > keptHeadBuf {
			t.Errorf("after %s: a %d-byte head buffer kept", path, n)
		}
	}
}
