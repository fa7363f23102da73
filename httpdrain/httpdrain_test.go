package httpdrain_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-go/baton/httpdrain"
)

// Bounds are generous on purpose: tests assert outcomes, not timings.
const (
	testTimeout = 30 * time.Second
	longGrace   = 30 * time.Second
)

var quiet = slog.New(slog.DiscardHandler)

type testServer struct {
	*httpdrain.Server
	ln       net.Listener
	addr     string
	serveErr chan error
}

// start serves srv on a fresh 127.0.0.1 listener.
func start(t *testing.T, srv *http.Server, opts httpdrain.Options) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, srv, opts, ln)
}

func serveOn(t *testing.T, srv *http.Server, opts httpdrain.Options, ln net.Listener) *testServer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	ts := &testServer{Server: httpdrain.New(srv, opts), ln: ln, addr: ln.Addr().String(), serveErr: make(chan error, 1)}
	go func() { ts.serveErr <- ts.Serve(ln) }()
	t.Cleanup(func() {
		// Idempotent: returns the earlier report if the test drained.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ts.Drain(ctx)
	})
	return ts
}

// serveResult waits for Serve to return.
func (ts *testServer) serveResult(t *testing.T) error {
	t.Helper()
	select {
	case err := <-ts.serveErr:
		return err
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return")
		return nil
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// client speaks HTTP/1.1 over a raw connection. Unlike http.Client it never
// retries, so every lost request shows up as an error.
type client struct {
	net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(2 * testTimeout)) // never hang a test
	return &client{Conn: c, br: bufio.NewReader(c)}
}

func (c *client) send(method, path, body string) error {
	_, err := fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s",
		method, path, len(body), body)
	return err
}

func (c *client) read() (*http.Response, string, error) {
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

func (c *client) do(method, path, body string) (*http.Response, string, error) {
	if err := c.send(method, path, body); err != nil {
		return nil, "", err
	}
	return c.read()
}

// mustDo sends a request and checks that it got a 200.
func (c *client) mustDo(t *testing.T, method, path, body string) (*http.Response, string) {
	t.Helper()
	resp, got, err := c.do(method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: status %d, body %q", method, path, resp.StatusCode, got)
	}
	return resp, got
}

// expectClosed checks that the server closed c (EOF, not a timeout).
func (c *client) expectClosed(t *testing.T) {
	t.Helper()
	_, err := c.br.ReadByte()
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open: read err %v", err)
	}
}

func okHandler(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	io.WriteString(w, "ok")
}

func checkClean(t *testing.T, rep httpdrain.Report, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("Drain: %v (report %+v)", err, rep)
	}
	if rep.ForcedHTTP != 0 || rep.ForcedHijacked != 0 || rep.HandlersAtDeadline != 0 {
		t.Fatalf("Drain forced something: %+v", rep)
	}
	if rep.Finished.Before(rep.Started) {
		t.Fatalf("bad times: %+v", rep)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKeepAliveHandover simulates a hot upgrade: the old and the new server
// hold descriptors of the same listening socket, keep-alive clients send
// POSTs without pause while the old one drains, and none may fail.
func TestKeepAliveHandover(t *testing.T) {
	lnOld, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := lnOld.(*net.TCPListener).File()
	if err != nil {
		t.Skipf("cannot duplicate listener: %v", err)
	}
	lnNew, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Skipf("cannot duplicate listener: %v", err)
	}
	defer lnNew.Close()

	handler := func(name string, s **testServer) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			state := "serving"
			if (*s).Draining() {
				state = "draining" // the response must carry Connection: close
			}
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s:%s:%s", name, state, b)
		}
	}
	var oldS, newS *testServer
	oldS = serveOn(t, &http.Server{Handler: handler("old", &oldS)}, httpdrain.Options{IdleGrace: longGrace}, lnOld)

	const clients = 8
	var (
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		failures  atomic.Int64
		firstErr  atomic.Value
		servedOld [clients]atomic.Int64
		servedNew [clients]atomic.Int64
		closedOld [clients]atomic.Int64
	)
	fail := func(err error) {
		failures.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *client
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if c == nil {
					conn, err := net.Dial("tcp", oldS.addr)
					if err != nil {
						fail(err)
						return
					}
					conn.SetDeadline(time.Now().Add(2 * testTimeout))
					defer conn.Close()
					c = &client{Conn: conn, br: bufio.NewReader(conn)}
				}
				body := fmt.Sprintf("c%d-%d", i, n)
				resp, got, err := c.do("POST", "/", body)
				switch {
				case err != nil:
					fail(fmt.Errorf("client %d request %d: %w", i, n, err))
					return
				case resp.StatusCode != http.StatusOK || !strings.HasSuffix(got, ":"+body):
					fail(fmt.Errorf("client %d: status %d body %q", i, resp.StatusCode, got))
					return
				case strings.HasPrefix(got, "old:draining:") && !resp.Close:
					fail(fmt.Errorf("client %d: response while draining without Connection: close", i))
					return
				case strings.HasPrefix(got, "old:"):
					servedOld[i].Add(1)
					if resp.Close {
						closedOld[i].Add(1)
					}
				default:
					servedNew[i].Add(1)
				}
				if resp.Close {
					c.Close()
					c = nil // reconnect: after the drain started, lands on the new server
				}
			}
		}()
	}

	// All clients are on the old server, which is the only one accepting.
	waitFor(t, "traffic on the old server", func() bool {
		for i := range clients {
			if servedOld[i].Load() < 5 && failures.Load() == 0 {
				return false
			}
		}
		return true
	})

	// The new process starts accepting on the same socket, the old drains.
	newS = serveOn(t, &http.Server{Handler: handler("new", &newS)}, httpdrain.Options{}, lnNew)
	rep, err := oldS.Drain(ctxTimeout(t, 2*testTimeout))
	checkClean(t, rep, err)
	if err := oldS.serveResult(t); err != nil {
		t.Errorf("old Serve: %v", err)
	}
	if rep.ConnsAtStart != clients {
		t.Errorf("ConnsAtStart = %d, want %d", rep.ConnsAtStart, clients)
	}
	if rep.IdleWaited >= longGrace {
		t.Errorf("drain did not finish early: %+v", rep)
	}

	// Traffic goes on, on the new server only.
	waitFor(t, "traffic on the new server", func() bool {
		for i := range clients {
			if servedNew[i].Load() < 5 && failures.Load() == 0 {
				return false
			}
		}
		return true
	})
	close(stop)
	wg.Wait()

	if n := failures.Load(); n != 0 {
		t.Fatalf("%d failed requests, first: %v", n, firstErr.Load())
	}
	for i := range clients {
		if closedOld[i].Load() == 0 {
			t.Errorf("client %d never got Connection: close from the old server", i)
		}
	}
	t.Logf("report: %+v", rep)
}

// TestConnAcceptedBeforeDrain: a connection accepted just before the drain,
// whose first request arrives after the listener was closed, is served.
func TestConnAcceptedBeforeDrain(t *testing.T) {
	accepted := make(chan struct{}, 1)
	srv := &http.Server{
		Handler: http.HandlerFunc(okHandler),
		ConnState: func(c net.Conn, st http.ConnState) { // chained by New
			if st == http.StateNew {
				accepted <- struct{}{}
			}
		},
	}
	ts := start(t, srv, httpdrain.Options{NewConnWait: testTimeout, IdleGrace: longGrace})
	c := dial(t, ts.addr)
	<-accepted

	type result struct {
		rep httpdrain.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := ts.Drain(ctxTimeout(t, 2*testTimeout))
		done <- result{rep, err}
	}()
	if err := ts.serveResult(t); err != nil { // the listener is closed now
		t.Errorf("Serve: %v", err)
	}

	resp, _ := c.mustDo(t, "POST", "/", "late")
	if !resp.Close {
		t.Error("response during the drain without Connection: close")
	}
	c.expectClosed(t)
	r := <-done
	checkClean(t, r.rep, r.err)
	if r.rep.ConnsAtStart != 1 {
		t.Errorf("ConnsAtStart = %d, want 1", r.rep.ConnsAtStart)
	}
}

// TestSlowInFlight: a request running when the drain starts completes, and
// its response tells the client to reconnect.
func TestSlowInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	ts := start(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "done")
	})}, httpdrain.Options{IdleGrace: longGrace})

	c := dial(t, ts.addr)
	if err := c.send("POST", "/", "slow"); err != nil {
		t.Fatal(err)
	}
	<-entered
	done := make(chan error, 1)
	go func() {
		rep, err := ts.Drain(ctxTimeout(t, 2*testTimeout))
		if err == nil && rep.ConnsAtStart != 1 {
			err = fmt.Errorf("ConnsAtStart = %d, want 1", rep.ConnsAtStart)
		}
		done <- err
	}()
	waitFor(t, "Draining", ts.Draining)
	close(release)

	resp, body, err := c.read()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || body != "done" || !resp.Close {
		t.Fatalf("got %d %q close=%v, want 200 \"done\" close=true", resp.StatusCode, body, resp.Close)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestIdleConnClosedAfterGrace: an idle keep-alive conn stays open during
// the grace period and is closed afterwards.
func TestIdleConnClosedAfterGrace(t *testing.T) {
	const grace = 200 * time.Millisecond
	ts := start(t, &http.Server{Handler: http.HandlerFunc(okHandler)}, httpdrain.Options{IdleGrace: grace})
	c := dial(t, ts.addr)
	if resp, _ := c.mustDo(t, "GET", "/", ""); resp.Close {
		t.Fatal("Connection: close before the drain")
	}

	rep, err := ts.Drain(ctxTimeout(t, testTimeout))
	checkClean(t, rep, err)
	if rep.ConnsAtStart != 1 || rep.IdleWaited < grace {
		t.Errorf("want 1 conn kept for the grace, got %+v", rep)
	}
	c.expectClosed(t)
}

// TestIdleConnRequestDuringGrace: an idle conn that sends a request during
// the grace is served with Connection: close, and the drain then finishes
// without waiting for the rest of the grace.
func TestIdleConnRequestDuringGrace(t *testing.T) {
	ts := start(t, &http.Server{Handler: http.HandlerFunc(okHandler)}, httpdrain.Options{IdleGrace: longGrace})
	c := dial(t, ts.addr)
	c.mustDo(t, "GET", "/", "")

	type result struct {
		rep httpdrain.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := ts.Drain(ctxTimeout(t, 2*testTimeout))
		done <- result{rep, err}
	}()
	waitFor(t, "Draining", ts.Draining)

	resp, _ := c.mustDo(t, "POST", "/", "during grace")
	if !resp.Close {
		t.Error("response during the drain without Connection: close")
	}
	c.expectClosed(t)
	r := <-done
	checkClean(t, r.rep, r.err)
	if r.rep.IdleWaited >= longGrace {
		t.Errorf("drain did not finish early: %+v", r.rep)
	}
}

// TestDrainFinishesEarlyWithoutConns: with no connection open, Drain does
// not wait for the idle grace.
func TestDrainFinishesEarlyWithoutConns(t *testing.T) {
	var open atomic.Int64
	ts := start(t, &http.Server{
		Handler: http.HandlerFunc(okHandler),
		ConnState: func(c net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				open.Add(1)
			case http.StateClosed, http.StateHijacked:
				open.Add(-1)
			}
		},
	}, httpdrain.Options{IdleGrace: longGrace})
	c := dial(t, ts.addr) // makes sure Serve is running
	c.mustDo(t, "GET", "/", "")
	c.Close()
	waitFor(t, "no open conns", func() bool { return open.Load() == 0 })

	begin := time.Now()
	rep, err := ts.Drain(ctxTimeout(t, 2*testTimeout))
	checkClean(t, rep, err)
	if d := time.Since(begin); d >= longGrace/2 {
		t.Errorf("Drain took %v with no connection", d)
	}
	if err := ts.serveResult(t); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// TestDeadlineForcesActive: a handler that never finishes is cut at the
// deadline and counted.
func TestDeadlineForcesActive(t *testing.T) {
	entered := make(chan struct{})
	ts := start(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done() // canceled once the conn is force-closed
	})}, httpdrain.Options{IdleGrace: 50 * time.Millisecond})

	c := dial(t, ts.addr)
	if err := c.send("GET", "/", ""); err != nil {
		t.Fatal(err)
	}
	<-entered
	rep, err := ts.Drain(ctxTimeout(t, 300*time.Millisecond))
	if !errors.Is(err, httpdrain.ErrForced) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain error = %v, want ErrForced and DeadlineExceeded", err)
	}
	if rep.ForcedHTTP != 1 || rep.ForcedHijacked != 0 || rep.HandlersAtDeadline != 1 {
		t.Errorf("report %+v, want 1 forced http conn and 1 handler", rep)
	}
	if _, _, err := c.read(); err == nil {
		t.Error("got a response from a force-closed conn")
	}

	// A second call returns the same outcome.
	rep2, err2 := ts.Drain(context.Background())
	if rep2 != rep || err2 != err {
		t.Errorf("second Drain = %+v, %v; want %+v, %v", rep2, err2, rep, err)
	}
}

// hijackServer serves an upgrade on /ws: it registers the hijacked conn and
// writes "bye\n" when notified. If keep is false the conn is released when
// the client closes it; otherwise it stays registered.
func hijackServer(t *testing.T, keep bool, notified chan struct{}) *testServer {
	var ts *testServer
	ts = start(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		var mu sync.Mutex // notify writes concurrently with the handshake
		release := ts.Hijacked(conn, func() {
			mu.Lock()
			defer mu.Unlock()
			brw.WriteString("bye\n")
			brw.Flush()
			close(notified)
		})
		mu.Lock()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		mu.Unlock()
		if keep {
			return // leaked on purpose: Drain must close it
		}
		go func() {
			defer release()
			defer conn.Close()
			io.Copy(io.Discard, brw) // until the client hangs up
		}()
	})}, httpdrain.Options{IdleGrace: 50 * time.Millisecond})
	return ts
}

func upgrade(t *testing.T, addr string) *client {
	c := dial(t, addr)
	if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return c
}

func TestHijackedReleased(t *testing.T) {
	notified := make(chan struct{})
	ts := hijackServer(t, false, notified)
	c := upgrade(t, ts.addr)

	type result struct {
		rep httpdrain.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := ts.Drain(ctxTimeout(t, 2*testTimeout))
		done <- result{rep, err}
	}()
	line, err := c.br.ReadString('\n')
	if err != nil || line != "bye\n" {
		t.Fatalf("read %q, %v; want the close notification", line, err)
	}
	<-notified
	c.Close() // the application finishes its close handshake
	r := <-done
	checkClean(t, r.rep, r.err)
	if r.rep.HijackedAtStart != 1 {
		t.Errorf("HijackedAtStart = %d, want 1", r.rep.HijackedAtStart)
	}
}

func TestHijackedForced(t *testing.T) {
	notified := make(chan struct{})
	ts := hijackServer(t, true, notified)
	c := upgrade(t, ts.addr)

	rep, err := ts.Drain(ctxTimeout(t, 300*time.Millisecond))
	if !errors.Is(err, httpdrain.ErrForced) {
		t.Fatalf("Drain error = %v, want ErrForced", err)
	}
	if rep.ForcedHijacked != 1 || rep.ForcedHTTP != 0 || rep.HijackedAtStart != 1 {
		t.Errorf("report %+v, want 1 forced hijacked conn", rep)
	}
	<-notified
	if line, err := c.br.ReadString('\n'); line != "bye\n" || err != nil {
		t.Fatalf("read %q, %v; want the close notification", line, err)
	}
	c.expectClosed(t)
}

// TestListenerClosedBeforeDrain: at a handover the listener is closed by
// someone else first; Serve returns nil and Drain still works.
func TestListenerClosedBeforeDrain(t *testing.T) {
	ts := start(t, &http.Server{Handler: http.HandlerFunc(okHandler)}, httpdrain.Options{IdleGrace: longGrace})
	c := dial(t, ts.addr)
	c.mustDo(t, "GET", "/", "")

	ts.ln.Close()
	if err := ts.serveResult(t); err != nil {
		t.Fatalf("Serve after the listener was closed: %v", err)
	}
	// The kept-alive conn is still served, and told to go away.
	if ts.Draining() {
		t.Fatal("Draining before Drain")
	}
	done := make(chan error, 1)
	go func() {
		rep, err := ts.Drain(ctxTimeout(t, 2*testTimeout))
		if err == nil && (rep.ForcedHTTP != 0 || rep.ConnsAtStart != 1) {
			err = fmt.Errorf("report %+v", rep)
		}
		done <- err
	}()
	waitFor(t, "Draining", ts.Draining)
	if resp, _ := c.mustDo(t, "POST", "/", "x"); !resp.Close {
		t.Error("response during the drain without Connection: close")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestDrainWithoutServe: Drain works when Serve was never called, is
// idempotent, and a later Serve returns nil at once.
func TestDrainWithoutServe(t *testing.T) {
	s := httpdrain.New(&http.Server{}, httpdrain.Options{Logger: quiet})
	rep, err := s.Drain(ctxTimeout(t, testTimeout))
	checkClean(t, rep, err)
	if !s.Draining() {
		t.Error("Draining() = false after Drain")
	}
	rep2, err2 := s.Drain(ctxTimeout(t, testTimeout))
	if rep2 != rep || err2 != nil {
		t.Errorf("second Drain = %+v, %v; want %+v, nil", rep2, err2, rep)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); err != nil {
		t.Errorf("Serve after Drain = %v, want nil", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("listener not closed by Serve after Drain: %v", err)
	}
}

// TestConcurrentServeAndDrain: several listeners, drained together.
func TestConcurrentServeAndDrain(t *testing.T) {
	ts := start(t, &http.Server{Handler: http.HandlerFunc(okHandler)}, httpdrain.Options{})
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- ts.Serve(ln2) }()
	for _, addr := range []string{ts.addr, ln2.Addr().String()} {
		c := dial(t, addr) // makes sure both Serve calls run
		c.mustDo(t, "GET", "/", "")
		c.Close()
	}

	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := ts.Drain(ctxTimeout(t, 2*testTimeout)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, ch := range []chan error{ts.serveErr, errc} {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("Serve did not return")
		}
	}
}

// TestResponseWriterDuringDrain: the optional interfaces of the
// ResponseWriter keep working and all paths add Connection: close.
func TestResponseWriterDuringDrain(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/readfrom", func(w http.ResponseWriter, r *http.Request) {
		// LimitReader has no WriteTo, so io.Copy uses w's ReadFrom.
		io.Copy(w, io.LimitReader(strings.NewReader("readfrom"), 100))
	})
	mux.HandleFunc("/string", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "string")
	})
	mux.HandleFunc("/flush", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "fl")
		w.(http.Flusher).Flush()
		io.WriteString(w, "ush")
	})
	mux.HandleFunc("/controller", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w) // reaches net/http through Unwrap
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetWriteDeadline: %v", err)
		}
		io.WriteString(w, "contr")
		if err := rc.Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
		io.WriteString(w, "oller")
	})
	mux.HandleFunc("/hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "hints")
	})
	ts := start(t, &http.Server{Handler: mux}, httpdrain.Options{IdleGrace: longGrace})

	paths := []string{"/readfrom", "/string", "/flush", "/controller", "/hints"}
	var clients []*client
	for _, p := range paths {
		c := dial(t, ts.addr)
		if p == "/hints" {
			c.mustDo(t, "GET", "/string", "")
		} else if resp, body := c.mustDo(t, "GET", p, ""); resp.Close || body != p[1:] {
			t.Fatalf("%s before drain: close=%v body %q", p, resp.Close, body)
		}
		clients = append(clients, c)
	}

	done := make(chan error, 1)
	go func() {
		_, err := ts.Drain(ctxTimeout(t, 2*testTimeout))
		done <- err
	}()
	waitFor(t, "Draining", ts.Draining)

	for i, p := range paths {
		c := clients[i]
		if err := c.send("GET", p, ""); err != nil {
			t.Fatal(err)
		}
		if p == "/hints" {
			resp, _, err := c.read()
			if err != nil || resp.StatusCode != http.StatusEarlyHints {
				t.Fatalf("want 103 first, got %v %v", resp, err)
			}
			if resp.Header.Get("Connection") != "" || resp.Header.Get("Link") == "" {
				t.Errorf("103 header: %v", resp.Header)
			}
		}
		resp, body, err := c.read()
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if resp.StatusCode != http.StatusOK || body != p[1:] || !resp.Close {
			t.Errorf("%s: %d %q close=%v, want 200 %q close=true", p, resp.StatusCode, body, resp.Close, p[1:])
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestHTTP2: an HTTP/2 request in flight completes; the connection is
// ended with GOAWAY.
func TestHTTP2(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	ts := start(t, &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, r.Proto)
	})}, httpdrain.Options{IdleGrace: longGrace})

	var cp http.Protocols
	cp.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &cp}
	defer tr.CloseIdleConnections()
	type result struct {
		body  string
		close bool
		err   error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := (&http.Client{Transport: tr}).Get("http://" + ts.addr + "/")
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{body: string(b), close: resp.Header.Get("Connection") != "", err: err}
	}()
	<-entered
	done := make(chan error, 1)
	go func() {
		rep, err := ts.Drain(ctxTimeout(t, 2*testTimeout))
		if err == nil && rep.ConnsAtStart != 1 {
			err = fmt.Errorf("report %+v", rep)
		}
		done <- err
	}()
	waitFor(t, "Draining", ts.Draining)
	close(release)
	r := <-res
	if r.err != nil || r.body != "HTTP/2.0" || r.close {
		t.Fatalf("got %+v, want HTTP/2.0 without a Connection header", r)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
