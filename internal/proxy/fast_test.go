package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
)

// requireFastPath skips a test of the fast path where it is not used.
func requireFastPath(t *testing.T) {
	t.Helper()
	if !fastPathSupported {
		t.Skip("no fast path on this platform (no non-blocking peek, see idle_other.go): net/http serves every connection, as http_test.go checks")
	}
}

// rawApp is a loopback backend answering each request with what answer
// writes (raw bytes); it closes the connection when answer says so.
// closed (if not nil) hears of each such close once done.
func rawApp(t *testing.T, answer func(w *bufio.Writer, r *http.Request, body string) (closeConn bool), closed chan<- struct{}) (Backend, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br, bw := bufio.NewReader(c), bufio.NewWriter(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body, _ := io.ReadAll(req.Body)
					closeConn := answer(bw, req, string(body))
					if bw.Flush() != nil {
						return
					}
					if closeConn {
						c.Close()
						if closed != nil {
							closed <- struct{}{}
						}
						return
					}
				}
			}()
		}
	}()
	return Backend{ID: "raw", Network: "tcp", Addr: ln.Addr().String(), Weight: 1}, &conns
}

// Keep-alive GET and POST and fresh connections stay on the fast path:
// no connection is handed over to net/http.
func TestFastPathTakesCommonRequests(t *testing.T) {
	requireFastPath(t)
	a := startApp(t, "a", 101, nil)
	set := NewSet(SetOptions{})
	p, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, a.backend(1))
	r := runLoad(t, addr, map[loadgen.Kind]int{loadgen.KeepAliveGET: 2, loadgen.KeepAlivePOST: 2, loadgen.Fresh: 1}, 500)
	if r.TotalFailed() != 0 || r.TotalOK() != 500 {
		t.Fatalf("load: %v", r)
	}
	if n := p.handedOver.Load(); n != 0 {
		t.Errorf("%d connections handed over to net/http", n)
	}
	if st := set.Stats()["a"]; st.Requests != 500 || st.InFlight != 0 {
		t.Errorf("stats: %d requests, %d in flight", st.Requests, st.InFlight)
	}
}

// A backend that closes idle connections (here: each one, once its
// answer has reached the client) must not cost a request: a POST is never
// written to such a connection (it is found closed first), a GET that
// meets one goes again on a new connection to the same backend. Each
// request reaches the backend exactly once.
func TestFastPathBackendClosesIdle(t *testing.T) {
	requireFastPath(t)
	var mu sync.Mutex
	seen := map[string]int{}
	kick, closed := make(chan struct{}), make(chan struct{})
	b, _ := rawApp(t, func(w *bufio.Writer, r *http.Request, body string) bool {
		mu.Lock()
		seen[r.Header.Get("X-Req")]++
		mu.Unlock()
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		_ = w.Flush()
		<-kick
		return true
	}, closed)
	set := NewSet(SetOptions{})
	p, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, b)
	client := &http.Client{}
	for i := range 60 {
		method := []string{"POST", "GET"}[i%2]
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("once")
		}
		req, _ := http.NewRequest(method, "http://"+addr+"/", body)
		req.Header.Set("X-Req", fmt.Sprint(i))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(got) != "ok" {
			t.Fatalf("%s %d: %d %q", method, i, resp.StatusCode, got)
		}
		kick <- struct{}{} // the backend closes the connection, idle in the proxy's pool
		<-closed
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range 60 {
		if seen[fmt.Sprint(i)] != 1 {
			t.Errorf("request %d reached the backend %d times", i, seen[fmt.Sprint(i)])
		}
	}
	if st := set.Stats()["raw"]; st.ConnErrors != 0 || p.Failed() != 0 || p.handedOver.Load() != 0 {
		t.Errorf("conn errors %d, failed %d, handed over %d", st.ConnErrors, p.Failed(), p.handedOver.Load())
	}
}

// Answer framings: chunked with a trailer, a body that ends when the
// backend closes (passed on chunked), HEAD, 204, a 103 before the answer,
// a Connection-named header dropped, a missing Content-Type sniffed.
func TestFastPathAnswerFramings(t *testing.T) {
	requireFastPath(t)
	b, _ := rawApp(t, func(w *bufio.Writer, r *http.Request, _ string) bool {
		switch r.URL.Path {
		case "/chunked":
			fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n")
		case "/until-close":
			fmt.Fprint(w, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end")
			return true
		case "/head":
			fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\n")
		case "/nocontent":
			fmt.Fprint(w, "HTTP/1.1 204 No Content\r\n\r\n")
		case "/early":
			fmt.Fprint(w, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: X-Private\r\nX-Private: secret\r\nContent-Type: text/plain\r\n\r\ndone")
		case "/sniff":
			fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n<html></html>")
		}
		return false
	}, nil)
	set := NewSet(SetOptions{})
	p, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, b)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	hints := 0
	do := func(method, path string) (*http.Response, string) {
		t.Helper()
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\n\r\n", method, path)
		req, _ := http.NewRequest(method, path, nil)
		resp, err := http.ReadResponse(br, req)
		for err == nil && resp.StatusCode == http.StatusEarlyHints {
			hints++
			resp, err = http.ReadResponse(br, req)
		}
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s body: %v", method, path, err)
		}
		return resp, string(body)
	}
	if resp, body := do("GET", "/chunked"); body != "hello world" || resp.Trailer.Get("X-Sum") != "42" || resp.ContentLength != -1 {
		t.Errorf("chunked: %q, trailer %v", body, resp.Trailer)
	}
	if resp, body := do("GET", "/until-close"); body != "to the end" || len(resp.TransferEncoding) != 1 || resp.Close {
		t.Errorf("until close: %q %v close=%v", body, resp.TransferEncoding, resp.Close)
	}
	if resp, body := do("HEAD", "/head"); body != "" || resp.ContentLength != 11 {
		t.Errorf("HEAD: %q, length %d", body, resp.ContentLength)
	}
	if resp, body := do("GET", "/nocontent"); resp.StatusCode != 204 || body != "" {
		t.Errorf("204: %d %q", resp.StatusCode, body)
	}
	if resp, body := do("GET", "/early"); resp.StatusCode != 200 || body != "done" || resp.Header.Get("X-Private") != "" || hints != 1 {
		t.Errorf("after 103: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, _ := do("GET", "/sniff"); resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || resp.Header.Get("Date") == "" {
		t.Errorf("sniffed: %v", resp.Header)
	}
	if p.handedOver.Load() != 0 || p.Failed() != 0 {
		t.Errorf("handed over %d, failed %d", p.handedOver.Load(), p.Failed())
	}
}

// Requests the fast path does not take hand the connection over to
// net/http mid-way, their bytes intact: on one connection a GET, a
// chunked upload, then a GET again, and a request head over the read
// buffer; a client's "Connection: close" is answered and honoured.
func TestFastPathHandOver(t *testing.T) {
	requireFastPath(t)
	a := startApp(t, "a", 101, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %d", r.Method, body, len(r.Header.Get("X-Big")))
	})
	set := NewSet(SetOptions{})
	p, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, a.backend(1))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	read := func(want string) {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != want {
			t.Fatalf("answer %q, want %q", body, want)
		}
	}
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	read("GET  0")
	if p.handedOver.Load() != 0 {
		t.Fatal("a plain GET was handed over")
	}
	// Pipelined: the chunked upload and the GET behind it arrive together.
	fmt.Fprint(c, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
	read("POST abcd 0")
	read("GET  0")
	if p.handedOver.Load() != 1 {
		t.Fatalf("handed over %d", p.handedOver.Load())
	}

	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetDeadline(time.Now().Add(30 * time.Second))
	big := strings.Repeat("b", clientReadBuf)
	fmt.Fprintf(c2, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\nConnection: close\r\n\r\n", big)
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != fmt.Sprintf("GET  %d", len(big)) || !resp.Close {
		t.Fatalf("big head: %q close=%v", body, resp.Close)
	}

	c3, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	_ = c3.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprint(c3, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	br3 := bufio.NewReader(c3)
	resp, err = http.ReadResponse(br3, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	if !resp.Close {
		t.Error("no Connection: close on the answer to a closing request")
	}
	if _, err := br3.ReadByte(); err != io.EOF {
		t.Errorf("connection left open after Connection: close: %v", err)
	}
	if p.handedOver.Load() != 2 {
		t.Errorf("handed over %d, want 2", p.handedOver.Load())
	}
}

// Shutdown closes idle fast-path connections at once, lets a request in
// progress finish (its answer says Connection: close), then returns.
func TestFastPathShutdown(t *testing.T) {
	requireFastPath(t)
	entered, release := make(chan struct{}), make(chan struct{})
	a := startApp(t, "a", 101, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		io.WriteString(w, "done")
	})
	set := NewSet(SetOptions{})
	mustSet(t, set, a.backend(1))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := NewHTTP(set, HTTPOptions{})
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		return c, bufio.NewReader(c)
	}
	idle, idleR := dial()
	fmt.Fprint(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(idleR, nil); err != nil {
		t.Fatal(err)
	} else {
		io.ReadAll(resp.Body)
	}
	busy, busyR := dial()
	fmt.Fprint(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		shut <- p.Shutdown(ctx)
	}()
	if _, err := idleR.ReadByte(); err != io.EOF {
		t.Errorf("idle connection: %v, want EOF", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in progress", err)
	default:
	}
	close(release)
	resp, err := http.ReadResponse(busyR, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "done" || !resp.Close {
		t.Errorf("in-flight answer %q, close=%v", body, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != ErrClosed {
		t.Errorf("Serve: %v", err)
	}
}

// The fast path's idle timeout follows the client's last answer, though
// setIdleDeadline moves the deadline only by more than ClientIdle/64: a
// client that keeps asking is never cut, an idle one is closed after
// ClientIdle (and not before 63/64 of it), and a ReadHeaderTimeout
// longer than ClientIdle does not outlast the first request.
func TestFastPathIdleTimeout(t *testing.T) {
	requireFastPath(t)
	a := startApp(t, "a", 1, nil)
	set := NewSet(SetOptions{})
	mustSet(t, set, a.backend(100))
	const idle = time.Second
	_, addr := startHTTP(t, set, HTTPOptions{ClientIdle: idle, ReadHeaderTimeout: 20 * time.Second})
	c, br := clientConnTo(t, addr)
	// Requests 100 ms apart for twice the idle timeout: the deadline
	// must keep moving (pacing, not synchronisation).
	start := time.Now()
	for time.Since(start) < 2*idle {
		if _, body, err := roundTrip(t, c, br, "GET", "/"); err != nil || body != "ok from a\n" {
			t.Fatalf("after %v of requests: %q, %v", time.Since(start).Round(time.Millisecond), body, err)
		}
		time.Sleep(idle / 10)
	}
	last := time.Now()
	if _, _, err := roundTrip(t, c, br, "GET", "/"); err != nil {
		t.Fatal(err)
	}
	// Now idle: the proxy closes the connection, after 63/64 of ClientIdle
	// at the soonest, well before the 20 s header timeout.
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle client connection: read %v, want the proxy's close (EOF)", err)
	}
	if waited := time.Since(last); waited < idle*63/64 || waited > 10*idle {
		t.Errorf("idle client closed after %v; want about %v", waited.Round(time.Millisecond), idle)
	}
}

// A watched request (its answer slower than the watch delay) leaves the
// client without a read deadline, as does a body that comes in parts,
// and a head in parts sets the header timeout: the idle deadline after
// each must be set again, however little it would move
// (setIdleDeadline keeps one that moves by less than ClientIdle/64).
func TestFastPathIdleTimeoutAfterWatch(t *testing.T) {
	requireFastPath(t)
	a := startApp(t, "a", 1, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(20 * time.Millisecond) // slower than the watch delay below
		}
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok\n")
	})
	set := NewSet(SetOptions{})
	mustSet(t, set, a.backend(100))
	// ClientIdle/64 (47 ms) is more than a request takes here, so the
	// deadline from the first request would be kept without the resets.
	const idle = 3 * time.Second
	_, addr := startHTTP(t, set, HTTPOptions{ClientIdle: idle, ReadHeaderTimeout: 20 * time.Second, watchDelay: 5 * time.Millisecond})
	// Each second request in two writes, paced to make two segments.
	cases := map[string][2]string{
		"watched":       {"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", ""},
		"head in parts": {"GET / HTTP/1.1\r\n", "Host: x\r\n\r\n"},
		"body in parts": {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab", "cd"},
	}
	for name, parts := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // each waits ClientIdle
			c, br := clientConnTo(t, addr)
			if _, body, err := roundTrip(t, c, br, "GET", "/"); err != nil || body != "ok\n" {
				t.Fatalf("first request: %q, %v", body, err)
			}
			for i, part := range parts {
				if i > 0 && part != "" {
					time.Sleep(5 * time.Millisecond) // pacing, not synchronisation
				}
				if _, err := io.WriteString(c, part); err != nil {
					t.Fatal(err)
				}
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("second request: %v, %v", resp, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			last := time.Now()
			_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("idle client connection: read %v, want the proxy's close (EOF) after %v", err, idle)
			}
			if waited := time.Since(last); waited > 2*idle {
				t.Errorf("idle client closed after %v; want about %v", waited.Round(time.Millisecond), idle)
			}
		})
	}
}
