package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// startTCP runs a TCPProxy on a loopback port until the test ends.
func startTCP(t testing.TB, set *Set) (*TCPProxy, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := NewTCP(set, TCPOptions{Logger: slog.New(slog.DiscardHandler)})
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrClosed) {
			t.Errorf("Serve returned %v, want ErrClosed", err)
		}
	})
	return p, ln.Addr().String()
}

// tcpApp is a raw TCP backend on loopback; serve handles each connection
// (and closes it after).
type tcpApp struct {
	id string
	ln net.Listener
	wg sync.WaitGroup
}

func startTCPApp(t testing.TB, id string, serve func(c *net.TCPConn)) *tcpApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &tcpApp{id: id, ln: ln}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				defer c.Close()
				serve(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		a.wg.Wait()
	})
	return a
}

func (a *tcpApp) backend(weight int) Backend {
	return Backend{ID: a.id, Network: "tcp", Addr: a.ln.Addr().String(), Weight: weight}
}

// sayID writes the backend's ID and closes.
func sayID(id string) func(c *net.TCPConn) {
	return func(c *net.TCPConn) { _, _ = io.WriteString(c, id) }
}

// reverser reads until the client's half-close, then answers the bytes
// reversed and closes: both half-closes must pass through the proxy.
func reverser(c *net.TCPConn) {
	in, err := io.ReadAll(c)
	if err != nil {
		return
	}
	for i, j := 0, len(in)-1; i < j; i, j = i+1, j-1 {
		in[i], in[j] = in[j], in[i]
	}
	_, _ = c.Write(in)
}

func dialRead(t testing.TB, addr string) string {
	t.Helper()
	s, err := tryDialRead(addr)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tryDialRead is dialRead for goroutines other than the test's.
func tryDialRead(addr string) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func TestTCPHalfCloseEcho(t *testing.T) {
	a := startTCPApp(t, "a", reverser)
	set := NewSet(SetOptions{})
	_, addr := startTCP(t, set)
	mustSet(t, set, a.backend(1))

	data := make([]byte, 4<<20)
	_, _ = rand.Read(data)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(c)
		got <- b
	}()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	back := <-got
	for i, j := 0, len(data)-1; i < j; i, j = i+1, j-1 {
		data[i], data[j] = data[j], data[i]
	}
	if !bytes.Equal(back, data) {
		t.Fatalf("got %d bytes back, want the %d sent, reversed", len(back), len(data))
	}
	waitFor(t, "the session to end", func() bool { return set.Stats()["a"].InFlight == 0 })
	if st := set.Stats()["a"]; st.Requests != 1 || st.BytesIn != 4<<20 || st.BytesOut != 4<<20 {
		t.Errorf("stats: requests %d, in %d, out %d", st.Requests, st.BytesIn, st.BytesOut)
	}
}

// Per-connection weights: 10/90 over 2,000 connections.
func TestTCPWeights(t *testing.T) {
	a, b := startTCPApp(t, "a", sayID("a")), startTCPApp(t, "b", sayID("b"))
	set := NewSet(SetOptions{})
	p, addr := startTCP(t, set)
	mustSet(t, set, a.backend(0), b.backend(100))
	for range 100 {
		if got := dialRead(t, addr); got != "b" {
			t.Fatalf("0/100: answered by %q", got)
		}
	}
	mustSet(t, set, a.backend(10), b.backend(90))
	n := map[string]int{}
	const total = 2000
	for range total {
		n[dialRead(t, addr)]++
	}
	t.Logf("10/90 over %d connections: a %d, b %d", total, n["a"], n["b"])
	if n["a"]+n["b"] != total || n["a"] < total*8/100 || n["a"] > total*12/100 {
		t.Fatalf("10/90: %v", n)
	}
	if p.Failed() != 0 {
		t.Errorf("failed %d", p.Failed())
	}
	waitFor(t, "sessions to end", func() bool { return set.Stats()["a"].InFlight+set.Stats()["b"].InFlight == 0 })
	if st := set.Stats(); st["a"].Requests != int64(n["a"]) || st["b"].Requests != int64(100+n["b"]) {
		t.Errorf("stats a %d b %d", st["a"].Requests, st["b"].Requests)
	}
}

// A backend that refuses connections is skipped; the client never knows.
func TestTCPDialRetry(t *testing.T) {
	b := startTCPApp(t, "b", sayID("b"))
	set := NewSet(SetOptions{})
	p, addr := startTCP(t, set)
	mustSet(t, set, Backend{ID: "dead", Network: "tcp", Addr: deadAddr(t), Weight: 50}, b.backend(50))
	for range 50 {
		if got := dialRead(t, addr); got != "b" {
			t.Fatalf("answered by %q", got)
		}
	}
	if d := set.Stats()["dead"]; d.ConnErrors == 0 || d.Retried != d.ConnErrors || p.Failed() != 0 {
		t.Errorf("dead: %d errors, %d passed on; failed %d", d.ConnErrors, d.Retried, p.Failed())
	}
	mustSet(t, set, Backend{ID: "dead", Network: "tcp", Addr: deadAddr(t), Weight: 1})
	if got := dialRead(t, addr); got != "" || p.Failed() != 1 || set.Unrouted() != 1 {
		t.Errorf("only a dead backend: read %q, failed %d, unrouted %d", got, p.Failed(), set.Unrouted())
	}
}

// A connection open on a removed backend keeps working; new ones go to the
// new list; WaitIdle returns once it ends.
func TestTCPRemoveWhileConnected(t *testing.T) {
	echo := func(c *net.TCPConn) { _, _ = io.Copy(c, c) }
	a, b := startTCPApp(t, "a", echo), startTCPApp(t, "b", sayID("b"))
	set := NewSet(SetOptions{})
	_, addr := startTCP(t, set)
	mustSet(t, set, a.backend(1))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	ping := func(msg string) {
		t.Helper()
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q: %q %v", msg, buf, err)
		}
	}
	ping("before")
	mustSet(t, set, b.backend(1))
	if got := dialRead(t, addr); got != "b" {
		t.Fatalf("new connection went to %q", got)
	}
	ping("after the switch")
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := set.WaitIdle(done, "a"); err == nil {
		t.Fatal("WaitIdle: idle with a connection open")
	}
	c.Close()
	if err := set.WaitIdle(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
}

// Shutdown waits for sessions, and closes them when its context ends.
func TestTCPShutdown(t *testing.T) {
	echo := func(c *net.TCPConn) { _, _ = io.Copy(c, c) }
	a := startTCPApp(t, "a", echo)
	set := NewSet(SetOptions{})
	mustSet(t, set, a.backend(1))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := NewTCP(set, TCPOptions{Logger: slog.New(slog.DiscardHandler)})
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown with a session open and a done context: %v", err)
	}
	if err := <-served; !errors.Is(err, ErrClosed) {
		t.Errorf("Serve: %v", err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("session not closed: %d %v", n, err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("listener still accepting")
	}
	if err := p.Serve(ln); !errors.Is(err, ErrClosed) {
		t.Errorf("Serve after Shutdown: %v", err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

// needSocketFiles skips where a TCP connection cannot become an os.File
// (Windows: passTo's taker duplicates the socket that way; proxy mode,
// which passes sockets for real, is Unix-only).
func needSocketFiles(t *testing.T) {
	c, _ := loopbackPair(t)
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Skipf("a TCP connection cannot become an os.File here (%v): the test's taker needs it; proxy mode runs on Unix only", err)
	}
	f.Close()
}

// passTo is a TCPOptions.Pass that stands for backends' processes taking
// the client's socket: for the IDs in take, a duplicate of the socket is
// served here (it says "passed-ID" and closes); others get the result in
// other. Every call is counted by ID.
type passTo struct {
	take  map[string]bool
	other map[string]PassResult
	mu    sync.Mutex
	calls map[string]int
	wg    sync.WaitGroup
}

func (pt *passTo) pass(_ context.Context, id string, c net.Conn) PassResult {
	pt.mu.Lock()
	if pt.calls == nil {
		pt.calls = map[string]int{}
	}
	pt.calls[id]++
	take, other := pt.take[id], pt.other[id]
	pt.mu.Unlock()
	if !take {
		return other
	}
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		return PassRelay
	}
	dup, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return PassRelay
	}
	pt.wg.Add(1)
	go func() {
		defer pt.wg.Done()
		defer dup.Close()
		_, _ = io.WriteString(dup, "passed-"+id)
	}()
	return Passed
}

func (pt *passTo) count(id string) int {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.calls[id]
}

func startTCPPass(t testing.TB, set *Set, pt *passTo) (*TCPProxy, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := NewTCP(set, TCPOptions{Logger: slog.New(slog.DiscardHandler), Pass: pt.pass})
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-served
		pt.wg.Wait()
	})
	return p, ln.Addr().String()
}

// TCPOptions.Pass: a passed connection is served by whoever took its
// socket, with nothing relayed; one refused goes to the other backends by
// weight (never to the refusing one, never twice), and fails only when no
// backend takes it; PassRelay relays as without Pass; PassLost closes.
func TestTCPPass(t *testing.T) {
	needSocketFiles(t)
	a, b := startTCPApp(t, "a", sayID("a")), startTCPApp(t, "b", sayID("b"))
	set := NewSet(SetOptions{})
	pt := &passTo{take: map[string]bool{"a": true}, other: map[string]PassResult{"b": PassRefused}}
	p, addr := startTCPPass(t, set, pt)
	mustSet(t, set, a.backend(50), b.backend(50))

	// Concurrent clients: each reads exactly one answer, from a's taker.
	const n = 200
	got := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := tryDialRead(addr)
			if err != nil {
				s = err.Error()
			}
			got <- s
		}()
	}
	wg.Wait()
	close(got)
	for s := range got {
		if s != "passed-a" {
			t.Fatalf("a client read %q, want exactly %q (b refuses every pass)", s, "passed-a")
		}
	}
	waitFor(t, "the passes to end", func() bool { return set.Stats()["a"].InFlight+set.Stats()["b"].InFlight == 0 })
	st := set.Stats()
	if pt.count("a") != n || pt.count("b") == 0 {
		t.Errorf("Pass called %d times for a, %d for b; want %d and some", pt.count("a"), pt.count("b"), n)
	}
	if sa := st["a"]; sa.Passed != n || sa.Requests != n || sa.BytesIn+sa.BytesOut != 0 {
		t.Errorf("a: passed %d, requests %d, bytes %d+%d; want %d passed, nothing relayed", sa.Passed, sa.Requests, sa.BytesIn, sa.BytesOut, n)
	}
	if lat := st["a"].Latency; lat.Count() != 0 {
		t.Errorf("a: %d latencies recorded for passed connections; want none (a pass's time is no connect time)", lat.Count())
	}
	if sb := st["b"]; sb.Refused != int64(pt.count("b")) || sb.Requests != 0 || sb.ConnErrors != 0 {
		t.Errorf("b: refused %d (of %d calls), requests %d, errors %d; want every call refused, no error (a took them)", sb.Refused, pt.count("b"), sb.Requests, sb.ConnErrors)
	}
	if p.Failed() != 0 || set.Unrouted() != 0 {
		t.Errorf("failed %d, unrouted %d", p.Failed(), set.Unrouted())
	}

	// Only a refusing backend: the connection is closed, counted failed
	// and as b's error.
	mustSet(t, set, b.backend(1))
	if got := dialRead(t, addr); got != "" || p.Failed() != 1 || set.Unrouted() != 1 || set.Stats()["b"].ConnErrors != 1 {
		t.Errorf("refused everywhere: read %q, failed %d, unrouted %d, b errors %d", got, p.Failed(), set.Unrouted(), set.Stats()["b"].ConnErrors)
	}

	// PassRelay: relayed to b as without Pass.
	pt.mu.Lock()
	pt.other["b"] = PassRelay
	pt.mu.Unlock()
	if got := dialRead(t, addr); got != "b" {
		t.Errorf("PassRelay: read %q, want b's relayed answer", got)
	}

	// PassLost: closed, a connection error of b, no relay.
	pt.mu.Lock()
	pt.other["b"] = PassLost
	pt.mu.Unlock()
	if got := dialRead(t, addr); got != "" || p.Failed() != 2 || set.Stats()["b"].ConnErrors != 2 {
		t.Errorf("PassLost: read %q, failed %d, b errors %d", got, p.Failed(), set.Stats()["b"].ConnErrors)
	}
}

// A pass refused because its backend was switched out meanwhile (baton
// retires a generation after taking it out of the list) goes to the
// backend that replaced it, not to an error.
func TestTCPPassRefusedAfterSwitch(t *testing.T) {
	a, b := startTCPApp(t, "a", sayID("a")), startTCPApp(t, "b", sayID("b"))
	set := NewSet(SetOptions{})
	offered, switched := make(chan struct{}), make(chan struct{})
	pt := &passTo{}
	hook := func(ctx context.Context, id string, c net.Conn) PassResult {
		pt.pass(ctx, id, c) // counts the call
		if id == "a" {
			close(offered)
			<-switched
			return PassRefused
		}
		return PassRelay
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := NewTCP(set, TCPOptions{Logger: slog.New(slog.DiscardHandler), Pass: hook})
	go p.Serve(ln)
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	mustSet(t, set, a.backend(1))
	got := make(chan string, 1)
	go func() {
		s, err := tryDialRead(ln.Addr().String())
		if err != nil {
			s = err.Error()
		}
		got <- s
	}()
	<-offered
	mustSet(t, set, b.backend(1))
	close(switched)
	if s := <-got; s != "b" || p.Failed() != 0 {
		t.Errorf("read %q (failed %d); want b's answer", s, p.Failed())
	}
}
