package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond; the generous bound only guards against hangs.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitDone(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(60 * time.Second):
		t.Fatal("load did not finish")
	}
}

type helloCounts struct {
	requests, sleeps, conns atomic.Int64
}

// startHello runs a real net/http server on ln that behaves like the hello service.
func startHello(t *testing.T, ln net.Listener, connClose bool) *helloCounts {
	t.Helper()
	c := &helloCounts{}
	pid := strconv.Itoa(os.Getpid())
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.requests.Add(1)
		w.Header().Set("X-Pid", pid)
		w.Header().Set("X-Version", "test")
		if connClose {
			w.Header().Set("Connection", "close")
		}
		switch {
		case r.URL.Path == "/sleep":
			c.sleeps.Add(1)
			ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
			time.Sleep(time.Duration(ms) * time.Millisecond)
		case r.Method == http.MethodPost:
			b, err := io.ReadAll(r.Body)
			if err != nil || string(b) != postBody {
				http.Error(w, "bad body", http.StatusBadRequest)
				return
			}
		}
		io.WriteString(w, "hello\n")
	})
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			c.conns.Add(1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return c
}

func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestAllKindsSucceed(t *testing.T) {
	ln := listenTCP(t)
	counts := startHello(t, ln, false)
	l, err := Start(context.Background(), Config{
		Addr:    ln.Addr().String(),
		Workers: map[Kind]int{KeepAliveGET: 2, KeepAlivePOST: 2, Fresh: 2, Slow: 1},
		SlowMS:  20,
	})
	if err != nil {
		t.Fatal(err)
	}
	pid := os.Getpid()
	if _, err := l.WaitPID(context.Background(), pid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "5 OK per kind", func() bool {
		for _, s := range l.Snapshot().ByKind {
			if s.OK < 5 {
				return false
			}
		}
		return true
	})
	r := l.Stop()
	t.Log("\n" + r.String())
	if r.TotalFailed() != 0 {
		t.Fatalf("failures: %+v", r.Failures)
	}
	if len(r.ByKind) != 4 {
		t.Fatalf("kinds: %v", r.ByKind)
	}
	if got := counts.requests.Load(); got != r.TotalOK() {
		t.Errorf("server saw %d requests, loader counted %d OK", got, r.TotalOK())
	}
	p, ok := r.PIDs[pid]
	if !ok || p.Responses != r.TotalOK() || p.Version != "test" || p.First.After(p.Last) {
		t.Errorf("pid stats: %+v", r.PIDs)
	}
	first, ok1 := l.FirstSeen(pid)
	last, ok2 := l.LastSeen(pid)
	if !ok1 || !ok2 || !first.Equal(p.First) || !last.Equal(p.Last) {
		t.Errorf("FirstSeen/LastSeen = %v %v %v %v", first, ok1, last, ok2)
	}
	if s := r.ByKind[Slow]; s.P50 < 20*time.Millisecond || s.Max < s.P99 || s.P99 < s.P50 {
		t.Errorf("slow latencies: %+v", s)
	}
	// Keep-alive workers must reuse connections: far fewer conns than requests.
	if c := counts.conns.Load(); c >= r.TotalOK() {
		t.Errorf("%d conns for %d requests: keep-alive not reused", c, r.TotalOK())
	}
}

func TestUnixSocket(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("unix sockets")
	}
	dir, err := os.MkdirTemp("", "lg") // short path: sun_path is limited
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	startHello(t, ln, false)
	l, err := Start(context.Background(), Config{
		Network: "unix", Addr: ln.Addr().String(),
		Workers:     map[Kind]int{KeepAliveGET: 1, KeepAlivePOST: 1},
		MaxRequests: 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, l.Done())
	r := l.Stop()
	if r.TotalOK() != 20 || r.TotalFailed() != 0 {
		t.Fatalf("report:\n%s", r)
	}
}

// rawServer accepts connections on loopback and runs handle for each.
func rawServer(t *testing.T, handle func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln := listenTCP(t)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String()
}

// readRequest reads one full request (headers and body).
func readRequest(br *bufio.Reader) bool {
	req, err := http.ReadRequest(br)
	if err != nil {
		return false
	}
	_, err = io.Copy(io.Discard, req.Body)
	return err == nil
}

const rawOK = "HTTP/1.1 200 OK\r\nX-Pid: 4242\r\nX-Version: raw\r\nContent-Length: 3\r\n\r\nok\n"

func TestAbruptCloseIsFailureWithoutRetry(t *testing.T) {
	var seen, answered atomic.Int64
	// Answers the first request on each connection, then reads the second one
	// and closes without a word.
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if !readRequest(br) {
			return
		}
		seen.Add(1)
		answered.Add(1)
		if _, err := io.WriteString(c, rawOK); err != nil {
			return
		}
		if readRequest(br) {
			seen.Add(1)
		}
	})
	const max = 60
	l, err := Start(context.Background(), Config{
		Addr:        addr,
		Workers:     map[Kind]int{KeepAliveGET: 2, KeepAlivePOST: 2, Fresh: 1, Slow: 1},
		MaxRequests: max,
	})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, l.Done())
	r := l.Stop()
	t.Log("\n" + r.String())
	if r.TotalOK()+r.TotalFailed() != max {
		t.Fatalf("ok+failed = %d, want %d", r.TotalOK()+r.TotalFailed(), max)
	}
	if r.TotalOK() != answered.Load() || r.TotalOK()+r.TotalFailed() != seen.Load() {
		t.Fatalf("server saw %d (answered %d), loader ok=%d failed=%d: retries or lost requests",
			seen.Load(), answered.Load(), r.TotalOK(), r.TotalFailed())
	}
	// Which persistent-connection worker hits the closes depends on
	// scheduling (one may use up MaxRequests alone); fresh ones never do.
	persistentFailed := r.ByKind[KeepAliveGET].Failed + r.ByKind[KeepAlivePOST].Failed + r.ByKind[Slow].Failed
	if r.ByKind[Fresh].Failed != 0 || persistentFailed == 0 {
		t.Fatalf("unexpected per-kind counts:\n%s", r)
	}
	for _, f := range r.Failures {
		if f.Phase != "read" || f.PID != 4242 || f.Kind == Fresh {
			t.Errorf("unexpected failure %+v", f)
		}
	}
	if int64(len(r.Failures)) != r.TotalFailed() {
		t.Errorf("%d failure records for %d failures", len(r.Failures), r.TotalFailed())
	}
}

func TestStatusAndShortBodyFail(t *testing.T) {
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		if req.Method == http.MethodPost {
			io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nX-Pid: 99\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Pid: 99\r\nContent-Length: 100\r\n\r\nshort")
	})
	l, err := Start(context.Background(), Config{
		Addr: addr, Workers: map[Kind]int{KeepAliveGET: 1, KeepAlivePOST: 1}, MaxRequests: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, l.Done())
	r := l.Stop()
	if r.TotalOK() != 0 || r.TotalFailed() != 10 {
		t.Fatalf("report:\n%s", r)
	}
	for _, f := range r.Failures {
		want := map[Kind]string{KeepAliveGET: "read", KeepAlivePOST: "status"}[f.Kind]
		if f.Phase != want || f.PID != 99 {
			t.Errorf("unexpected failure %+v", f)
		}
	}
	if len(r.PIDs) != 0 {
		t.Errorf("failed responses must not count as pid responses: %v", r.PIDs)
	}
}

func TestConnectionCloseReconnects(t *testing.T) {
	ln := listenTCP(t)
	counts := startHello(t, ln, true)
	const max = 40
	l, err := Start(context.Background(), Config{
		Addr:        ln.Addr().String(),
		Workers:     map[Kind]int{KeepAliveGET: 2, KeepAlivePOST: 1, Slow: 1},
		SlowMS:      5,
		MaxRequests: max,
	})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, l.Done())
	r := l.Stop()
	if r.TotalOK() != max || r.TotalFailed() != 0 {
		t.Fatalf("report:\n%s", r)
	}
	if c := counts.conns.Load(); c != max {
		t.Errorf("%d connections for %d Connection: close responses", c, max)
	}
}

// A server closing an idle keep-alive connection after a complete response
// is legitimate: the loader must notice and redial instead of failing.
func TestIdleCloseByServerIsNotFailure(t *testing.T) {
	var answered, raced atomic.Int64
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if !readRequest(br) {
			return
		}
		if _, err := io.WriteString(c, rawOK); err != nil {
			return
		}
		answered.Add(1)
		// Half-close: the client sees EOF, and we still learn whether it
		// sent another request anyway (a genuine race, then a real failure).
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if readRequest(br) {
			raced.Add(1)
		}
	})
	const max = 30
	l, err := Start(context.Background(), Config{
		Addr: addr, Workers: map[Kind]int{KeepAliveGET: 2, KeepAlivePOST: 1}, MaxRequests: max,
		Pause: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, l.Done())
	r := l.Stop()
	t.Logf("raced=%d\n%s", raced.Load(), r)
	if r.TotalOK() != answered.Load() || r.TotalFailed() != raced.Load() || r.TotalOK()+r.TotalFailed() != max {
		t.Fatalf("answered=%d raced=%d, loader:\n%s", answered.Load(), raced.Load(), r)
	}
	// Without the idle check every second request would race (raced == max/2);
	// with it a race needs the server to lag the client's pause on every conn.
	if raced.Load() >= max/2 {
		t.Fatalf("idle closes not detected: raced=%d", raced.Load())
	}
}

func TestPeerClosed(t *testing.T) {
	ln := listenTCP(t)
	defer ln.Close()
	pair := func() (client, server net.Conn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c, s
	}

	c, s := pair()
	br := bufio.NewReader(c)
	if peerClosed(c, br) {
		t.Fatal("open idle connection reported closed")
	}
	// Still usable after the check.
	go io.WriteString(s, "pong")
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if b := make([]byte, 4); func() error { _, err := io.ReadFull(br, b); return err }() != nil || string(b) != "pong" {
		t.Fatal("connection unusable after check")
	}
	c.SetReadDeadline(time.Time{})
	s.Close()
	waitFor(t, "closed peer detected", func() bool { return peerClosed(c, br) })
	c.Close()

	c, s = pair()
	defer s.Close()
	defer c.Close()
	br = bufio.NewReader(c)
	io.WriteString(s, "x")
	waitFor(t, "unsolicited data detected", func() bool { return peerClosed(c, br) })
}

func TestStopWaitsForInFlight(t *testing.T) {
	for _, viaCtx := range []bool{false, true} {
		t.Run(fmt.Sprint("ctx=", viaCtx), func(t *testing.T) {
			ln := listenTCP(t)
			counts := startHello(t, ln, false)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			l, err := Start(ctx, Config{Addr: ln.Addr().String(), Workers: map[Kind]int{Slow: 2}, SlowMS: 100})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.WaitPID(ctx, os.Getpid()); err != nil {
				t.Fatal(err)
			}
			if viaCtx {
				cancel()
				waitDone(t, l.Done())
			}
			r := l.Stop()
			if s := r.ByKind[Slow]; s.Failed != 0 || s.OK != counts.sleeps.Load() {
				t.Fatalf("server started %d sleeps; loader:\n%s", counts.sleeps.Load(), r)
			}
			if r2 := l.Stop(); r2.TotalOK() != r.TotalOK() || r2.Duration != r.Duration {
				t.Error("second Stop differs")
			}
		})
	}
}

func TestWaitPIDErrors(t *testing.T) {
	ln := listenTCP(t)
	startHello(t, ln, false)
	l, err := Start(context.Background(), Config{Addr: ln.Addr().String(), Workers: map[Kind]int{KeepAliveGET: 1}, MaxRequests: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.WaitPID(ctx, -7); err == nil {
		t.Error("WaitPID with cancelled ctx succeeded")
	}
	waitDone(t, l.Done())
	if _, err := l.WaitPID(context.Background(), -7); err == nil {
		t.Error("WaitPID after load finished succeeded")
	}
	if _, ok := l.FirstSeen(-7); ok {
		t.Error("FirstSeen of unknown pid")
	}
	if r := l.Stop(); r.TotalOK() != 3 {
		t.Fatalf("report:\n%s", r)
	}
}

func TestRefuseBadConfig(t *testing.T) {
	w := map[Kind]int{KeepAliveGET: 1}
	for _, addr := range []string{
		"10.0.0.1:80", "192.168.1.1:8080", "example.com:80", "0.0.0.0:80", ":80",
		"[::]:80", "[2001:db8::1]:80", "127.0.0.1", "",
	} {
		if l, err := Start(context.Background(), Config{Addr: addr, Workers: w}); err == nil {
			l.Stop()
			t.Errorf("Start(%q) accepted", addr)
		}
		if u, err := StartUDP(context.Background(), UDPConfig{Addr: addr}); err == nil {
			u.Stop()
			t.Errorf("StartUDP(%q) accepted", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:80", "127.1.2.3:80", "[::1]:80", "localhost:80", "LocalHost:1", "[::ffff:127.0.0.1]:80"} {
		if err := checkAddr("tcp", addr); err != nil {
			t.Errorf("checkAddr(%q): %v", addr, err)
		}
	}
	if loopbackControl("tcp4", "10.0.0.1:80", nil) == nil || loopbackControl("tcp", "127.0.0.1:80", nil) != nil ||
		loopbackControl("udp6", "[::1]:53", nil) != nil || loopbackControl("unix", "/tmp/x", nil) != nil {
		t.Error("loopbackControl")
	}
	for _, cfg := range []Config{
		{Addr: "127.0.0.1:1"},
		{Addr: "127.0.0.1:1", Workers: map[Kind]int{"bogus": 1}},
		{Addr: "127.0.0.1:1", Workers: map[Kind]int{UDP: 1}},
		{Addr: "127.0.0.1:1", Workers: map[Kind]int{Fresh: -1}},
		{Addr: "127.0.0.1:1", Workers: w, Network: "udp"},
	} {
		if l, err := Start(context.Background(), cfg); err == nil {
			l.Stop()
			t.Errorf("Start(%+v) accepted", cfg)
		}
	}
}

func TestDialFailureCounted(t *testing.T) {
	ln := listenTCP(t)
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connection refused
	l, err := Start(context.Background(), Config{Addr: addr, Workers: map[Kind]int{KeepAliveGET: 1, Fresh: 1}, MaxRequests: 6})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, l.Done())
	r := l.Stop()
	if r.TotalFailed() != 6 || r.TotalOK() != 0 {
		t.Fatalf("report:\n%s", r)
	}
	for _, f := range r.Failures {
		if f.Phase != "dial" {
			t.Errorf("unexpected failure %+v", f)
		}
	}
	if !strings.Contains(r.String(), "FAIL") {
		t.Errorf("String() lacks failures:\n%s", r)
	}
}

func TestHistogram(t *testing.T) {
	for _, v := range []int64{0, 1, 63, 127, 128, 129, 1000, 123456789, 1 << 40, 1<<62 + 12345, 1<<63 - 1} {
		i := histIndex(v)
		if i >= histBuckets || histUpper(i) < v || (i > 0 && histUpper(i-1) >= v) {
			t.Errorf("v=%d idx=%d upper=%d", v, i, histUpper(i))
		}
	}
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	near := func(got, want time.Duration) bool { return got >= want && got <= want+want/50 }
	if p := h.quantile(0.5); !near(p, 500*time.Millisecond) {
		t.Errorf("p50 = %v", p)
	}
	if p := h.quantile(0.99); !near(p, 990*time.Millisecond) {
		t.Errorf("p99 = %v", p)
	}
	if p := h.quantile(1); p != time.Second {
		t.Errorf("p100 = %v", p)
	}
}

// Stagger spreads the workers' first requests: the k-th first request
// (k = 0..n-1) arrives no earlier than k*Stagger/n after Start (a lower
// bound only: a slow machine makes them later, never earlier). A long
// Pause keeps each worker at one request, and Stop ends the pauses.
func TestStaggeredStart(t *testing.T) {
	const n = 4
	const stagger = 400 * time.Millisecond
	arrived := make(chan time.Time, n)
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		for readRequest(br) {
			arrived <- time.Now()
			if _, err := io.WriteString(c, rawOK); err != nil {
				return
			}
		}
	})
	start := time.Now()
	l, err := Start(context.Background(), Config{
		Addr: addr, Workers: map[Kind]int{KeepAlivePOST: n}, Pause: time.Hour, Stagger: stagger,
	})
	if err != nil {
		t.Fatal(err)
	}
	var at []time.Duration
	for range n {
		select {
		case a := <-arrived:
			at = append(at, a.Sub(start))
		case <-time.After(60 * time.Second):
			t.Fatalf("only %d of %d first requests arrived", len(at), n)
		}
	}
	r := l.Stop()
	if r.TotalOK() != n || r.TotalFailed() != 0 {
		t.Fatalf("report:\n%s", r)
	}
	for k, d := range at { // arrivals are in order: each at or after its slot
		if slot := stagger * time.Duration(k) / n; d < slot {
			t.Errorf("first request %d arrived %v after Start, before its slot %v (all: %v)", k, d, slot, at)
		}
	}
}
