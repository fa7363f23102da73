package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Regression tests for the review of the fast path's first version: each
// one failed with it. The backends here are raw TCP servers on loopback
// that answer with exactly the bytes a test gives them.

// evilBackend reads each request on each connection and lets answer write
// whatever it likes on the raw connection (it may block). When the proxy
// closes a connection after at least one request, closed hears the path
// of that connection's last request.
type evilBackend struct {
	Backend
	conns  atomic.Int64
	closed chan string
}

func startEvil(t *testing.T, answer func(c net.Conn, r *http.Request)) *evilBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	e := &evilBackend{Backend: Backend{ID: "evil", Network: "tcp", Addr: ln.Addr().String(), Weight: 1}, closed: make(chan string, 64)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				last := ""
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						if last != "" {
							e.closed <- last
						}
						return
					}
					_, _ = io.Copy(io.Discard, r.Body)
					last = r.URL.Path
					answer(c, r)
				}
			}()
		}
	}()
	return e
}

// waitClosed waits until the proxy has closed the backend connection that
// served path (a connection left in the pool would never be).
func (e *evilBackend) waitClosed(t *testing.T, path string) {
	t.Helper()
	select {
	case got := <-e.closed:
		if got != path {
			t.Fatalf("the proxy closed the connection of %s, want %s's", got, path)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the backend connection that served %s is still open", path)
	}
}

// clientConnTo dials the proxy; each read and write must finish in 20 s.
func clientConnTo(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c, bufio.NewReader(c)
}

// roundTrip sends a request on c and reads its final answer (1xx skipped)
// and body.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, method, path string) (*http.Response, string, error) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\n\r\n", method, path); err != nil {
		t.Fatal(err)
	}
	req := &http.Request{Method: method}
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, "", err
		}
		if resp.StatusCode >= 200 {
			body, err := io.ReadAll(resp.Body)
			return resp, string(body), err
		}
	}
}

// cleanPooled counts the backend's pooled connections that a request
// could take (nothing unread, not closed).
func cleanPooled(set *Set, id string) int {
	set.mu.Lock()
	b := set.all[id]
	set.mu.Unlock()
	if b == nil || b.pool.Load() == nil {
		return 0
	}
	cp := b.pool.Load()
	cp.mu.Lock()
	defer cp.mu.Unlock()
	n := 0
	for _, bc := range cp.conns {
		if bc.br.Buffered() == 0 && idleConnUsable(bc.c) {
			n++
		}
	}
	return n
}

const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Smuggled: yes\r\n\r\nEVIL"

// Finding 1: bytes a backend sends after an answer's end (a body after a
// HEAD, 204 or 304 answer, bytes after Content-Length) must never be read
// as the answer to a later request on that connection: here they form a
// whole answer, which reached the next client with the first version.
// Late bytes are waited for until they are at the proxy's socket.
func TestFastPathLateAnswerBytesNotRelayed(t *testing.T) {
	requireFastPath(t)
	cases := []struct{ name, method, answer string }{
		{"body after HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"},
		{"body after 204", "GET", "HTTP/1.1 204 No Content\r\n\r\n"},
		{"body after 304", "GET", "HTTP/1.1 304 Not Modified\r\n\r\n"},
		{"bytes after Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
	}
	for _, tc := range cases {
		for _, together := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/together=%v", tc.name, together), func(t *testing.T) {
				late := make(chan struct{})
				e := startEvil(t, func(c net.Conn, r *http.Request) {
					switch r.URL.Path {
					case "/first":
						if together {
							_, _ = io.WriteString(c, tc.answer+smuggled)
							return
						}
						_, _ = io.WriteString(c, tc.answer)
						<-late
						_, _ = io.WriteString(c, smuggled)
					default:
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
					}
				})
				set := NewSet(SetOptions{})
				p, addr := startHTTP(t, set, HTTPOptions{})
				mustSet(t, set, e.Backend)
				c, br := clientConnTo(t, addr)
				if _, _, err := roundTrip(t, c, br, tc.method, "/first"); err != nil {
					t.Fatal(err)
				}
				if !together {
					close(late)
				}
				waitFor(t, "the late bytes at the proxy", func() bool { return cleanPooled(set, "evil") == 0 })
				for i := range 3 {
					resp, body, err := roundTrip(t, c, br, "GET", "/second")
					if err != nil {
						t.Fatalf("request %d after: %v", i, err)
					}
					if body != "good" || resp.Header.Get("X-Smuggled") != "" {
						t.Fatalf("request %d after got %q %v: bytes sent after an earlier answer", i, body, resp.Header)
					}
				}
				e.waitClosed(t, "/first")
				if p.handedOver.Load() != 0 {
					t.Errorf("handed over %d", p.handedOver.Load())
				}
			})
		}
	}
}

// Finding 2: answer heads and chunked framing are checked; whatever is
// doubtful closes the backend connection (never pooled), and the client
// gets a 502 if nothing of the answer reached it yet, else a connection
// closed before the body's end, never the doubtful bytes as valid HTTP.
func TestFastPathRefusesMalformedAnswers(t *testing.T) {
	requireFastPath(t)
	const chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	cases := []struct {
		name, answer string
		head         bool // refused with its head: always 502
	}{
		{"bare LF line ends", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", true},
		{"bare LF in a header line", "HTTP/1.1 200 OK\r\nX-A: a\nX-B: b\r\nContent-Length: 2\r\n\r\nok", true},
		{"bare CR in a value", "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok", true},
		{"NUL in a value", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok", true},
		{"control character in a value", "HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\nok", true},
		{"space in a name", "HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 2\r\n\r\nok", true},
		{"space before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", true},
		{"obsolete line folding", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok", true},
		{"control character in the reason", "HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok", true},
		{"endless 1xx answers", strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", maxInformational+1) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true},
		{"chunk size not hex", chunked + "zz\r\nok\r\n0\r\n\r\n", false},
		{"chunk size with a bare LF", chunked + "2\nok\r\n0\r\n\r\n", false},
		{"chunk size too large", chunked + "1000000000000000\r\nok\r\n0\r\n\r\n", false},
		{"chunk extension with a control character", chunked + "2;a\x01b\r\nok\r\n0\r\n\r\n", false},
		{"chunk data longer than its size", chunked + "2\r\nokXX\r\n0\r\n\r\n", false},
		{"chunk data not ended by CRLF", chunked + "2\r\nok\n0\r\n\r\n", false},
		{"chunk data followed by two other bytes", chunked + "2\r\nokXX0\r\n\r\n", false},
		{"trailer with a bare CR", chunked + "2\r\nok\r\n0\r\nX-T: a\rb\r\n\r\n", false},
		{"trailer line without a colon", chunked + "2\r\nok\r\n0\r\nbad\r\n\r\n", false},
		{"body shorter than Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nok", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := startEvil(t, func(c net.Conn, r *http.Request) {
				if r.URL.Path == "/bad" {
					_, _ = io.WriteString(c, tc.answer)
					if strings.Contains(tc.answer, "Connection: close") {
						_ = c.(*net.TCPConn).CloseWrite()
					}
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
			})
			set := NewSet(SetOptions{})
			p, addr := startHTTP(t, set, HTTPOptions{})
			mustSet(t, set, e.Backend)
			c, br := clientConnTo(t, addr)
			resp, body, err := roundTrip(t, c, br, "GET", "/bad")
			switch {
			case err == nil && resp.StatusCode == http.StatusBadGateway:
			case !tc.head && resp != nil && resp.StatusCode == 200 && err != nil:
				// Part of the answer had left: the client sees it cut.
			default:
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				t.Fatalf("got %d %q, err %v: want 502 (or, for a body, a cut answer)", status, body, err)
			}
			e.waitClosed(t, "/bad")
			if p.Failed() == 0 && resp.StatusCode == http.StatusBadGateway {
				t.Error("a 502 not counted as failed")
			}
			// The proxy goes on with a new backend connection.
			c2, br2 := clientConnTo(t, addr)
			if _, body, err := roundTrip(t, c2, br2, "GET", "/good"); err != nil || body != "good" {
				t.Fatalf("next request: %q, %v", body, err)
			}
			if n := e.conns.Load(); n != 2 {
				t.Errorf("%d backend connections, want 2", n)
			}
			waitFor(t, "no request in flight", func() bool { return set.Stats()["evil"].InFlight == 0 })
		})
	}
}

// Finding 3: a Connection header naming a framing header must not remove
// it (the answer would be left without an end, and the next answer on the
// connection read as its body). An answer with both Content-Length and
// chunked is relayed chunked, and its connection not used again.
func TestFastPathKeepsFramingHeaders(t *testing.T) {
	requireFastPath(t)
	e := startEvil(t, func(c net.Conn, r *http.Request) {
		switch r.URL.Path {
		case "/length":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: Content-Length, Transfer-Encoding\r\nContent-Length: 3\r\n\r\none")
		case "/chunked":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding, Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n")
		case "/both":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthree\r\n0\r\n\r\n")
		default:
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
		}
	})
	set := NewSet(SetOptions{})
	p, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, e.Backend)
	c, br := clientConnTo(t, addr)
	for _, tc := range []struct{ path, want string }{{"/length", "one"}, {"/next", "next"}, {"/chunked", "two"}, {"/next", "next"}, {"/both", "three"}, {"/next", "next"}} {
		resp, body, err := roundTrip(t, c, br, "GET", tc.path)
		if err != nil || body != tc.want {
			t.Fatalf("%s: %q, %v; want %q", tc.path, body, err, tc.want)
		}
		if tc.path == "/length" && resp.ContentLength != 3 {
			t.Errorf("/length: Content-Length %d, want 3", resp.ContentLength)
		}
	}
	e.waitClosed(t, "/both")
	if p.handedOver.Load() != 0 || p.Failed() != 0 {
		t.Errorf("handed over %d, failed %d", p.handedOver.Load(), p.Failed())
	}
}

// Finding 4: a client that leaves while its request waits for the answer
// ends the backend request: the backend connection is closed (not
// pooled), the request counted as failed and no longer in flight.
func TestFastPathClientLeavesWhileWaiting(t *testing.T) {
	requireFastPath(t)
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			got := make(chan struct{})
			e := startEvil(t, func(c net.Conn, r *http.Request) {
				close(got)
				// No answer: the next read ends when the proxy closes.
			})
			set := NewSet(SetOptions{})
			p, addr := startHTTP(t, set, HTTPOptions{})
			mustSet(t, set, e.Backend)
			c, _ := clientConnTo(t, addr)
			fmt.Fprintf(c, "%s /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody", method)
			<-got
			c.Close()
			e.waitClosed(t, "/slow")
			waitFor(t, "the request counted as failed and ended", func() bool {
				return p.Failed() == 1 && set.Stats()["evil"].InFlight == 0
			})
			if n := cleanPooled(set, "evil"); n != 0 {
				t.Errorf("%d pooled connections", n)
			}
		})
	}
}

// Finding 5: a request whose lines end with bare LFs is handed to
// net/http (which accepts them, as RFC 9112 lets a recipient) instead of
// waiting for a CRLF CRLF; one with a bare CR is answered 400 by it.
func TestFastPathBareLineEndsInRequests(t *testing.T) {
	requireFastPath(t)
	a := startApp(t, "a", 101, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Method, r.Header.Get("X-A"))
	})
	set := NewSet(SetOptions{})
	p, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, a.backend(1))
	for i, tc := range []struct {
		req    string
		status int
		body   string
	}{
		{"GET / HTTP/1.1\nHost: x\nX-A: lf\n\n", 200, "GET lf"},
		{"GET / HTTP/1.1\r\nHost: x\nX-A: mixed\r\n\r\n", 200, "GET mixed"},
		{"GET / HTTP/1.1\r\nHost: x\r\nX-A: lf-end\r\n\n", 200, "GET lf-end"},
		{"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400, ""},
	} {
		c, br := clientConnTo(t, addr)
		if _, err := io.WriteString(c, tc.req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", tc.req, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tc.status || tc.status == 200 && string(body) != tc.body {
			t.Errorf("%q: %d %q, want %d %q", tc.req, resp.StatusCode, body, tc.status, tc.body)
		}
		if n := p.handedOver.Load(); n != int64(i+1) {
			t.Errorf("%q: handed over %d", tc.req, n)
		}
	}
}

// Answers slower than watchDelay (the app takes its time; the assertions
// hold whatever the timing) are watched for a leaving client and still
// relayed whole; the client connection and the pooled backend connection
// go on serving requests afterwards, with and without bodies.
func TestFastPathSlowAnswersWhileWatched(t *testing.T) {
	requireFastPath(t)
	a := startApp(t, "a", 101, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		time.Sleep(2 * watchDelay) // a slow app
		fmt.Fprintf(w, "%s %s", r.Method, body)
	})
	set := NewSet(SetOptions{})
	p, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, a.backend(1))
	c, br := clientConnTo(t, addr)
	for i := range 6 {
		method, body := "GET", ""
		if i%2 == 1 {
			method, body = "POST", fmt.Sprint(i)
		}
		fmt.Fprintf(c, "%s / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", method, len(body), body)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil || string(got) != method+" "+body {
			t.Fatalf("request %d: %q, %v", i, got, err)
		}
	}
	if p.Failed() != 0 || p.handedOver.Load() != 0 {
		t.Errorf("failed %d, handed over %d", p.Failed(), p.handedOver.Load())
	}
	if n := a.closed.Load(); n != 0 {
		t.Errorf("%d backend connections closed", n)
	}
}
