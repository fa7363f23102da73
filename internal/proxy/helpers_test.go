package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
)

// waitFor polls cond (an observable state, not a timer) until it holds or
// a generous deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// app is a backend HTTP server on loopback standing for one generation:
// every answer carries X-Backend (its ID) and X-Pid (a fake pid, for
// loadgen's per-pid counts).
type app struct {
	id     string
	pid    int
	srv    *httptest.Server
	hits   atomic.Int64
	closed atomic.Int64 // connections closed (ConnState)
}

// startApp serves h (nil: answer "ok", reading the body) behind the
// identifying headers.
func startApp(t testing.TB, id string, pid int, h http.HandlerFunc) *app {
	t.Helper()
	a := &app{id: id, pid: pid}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		w.Header().Set("X-Backend", id)
		w.Header().Set("X-Pid", strconv.Itoa(pid))
		if h != nil {
			h(w, r)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok from "+id+"\n")
	}))
	a.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			a.closed.Add(1)
		}
	}
	a.srv.Start()
	t.Cleanup(a.srv.Close)
	return a
}

func (a *app) backend(weight int) Backend {
	return Backend{ID: a.id, Network: "tcp", Addr: a.srv.Listener.Addr().String(), Weight: weight}
}

// deadAddr is a loopback address where nothing listens.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startHTTP runs an HTTPProxy on a loopback port until the test ends.
func startHTTP(t testing.TB, set *Set, opts HTTPOptions) (*HTTPProxy, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := NewHTTP(set, opts)
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

// runLoad sends exactly n requests (never retried, see loadgen) with the
// given clients and returns the report.
func runLoad(t testing.TB, addr string, workers map[loadgen.Kind]int, n int64) loadgen.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: workers, Pause: -1, MaxRequests: n})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Done():
	case <-ctx.Done():
		t.Fatalf("load of %d requests did not finish: %v", n, l.Stop())
	}
	return l.Stop()
}

// share is the percentage of a report's answers given by pid.
func share(r loadgen.Report, pid int) float64 {
	ok := r.TotalOK()
	if ok == 0 {
		return 0
	}
	return 100 * float64(r.PIDs[pid].Responses) / float64(ok)
}

// loopbackPair is a connected loopback TCP pair, closed when t ends.
func loopbackPair(t testing.TB) (dialed, accepted net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	accepted, err = ln.Accept()
	if err != nil {
		dialed.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { dialed.Close(); accepted.Close() })
	return dialed, accepted
}
