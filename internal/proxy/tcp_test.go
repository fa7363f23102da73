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
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
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
