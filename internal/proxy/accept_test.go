package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// emfileListener fails its first fails Accepts with the error Accept
// gives when the process is out of file descriptors (EMFILE), then
// accepts real connections.
type emfileListener struct {
	net.Listener
	fails atomic.Int64
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// Running out of file descriptors for a while must not stop a proxy:
// Serve waits and accepts again (the HTTP proxy's own loop returned on
// EMFILE, its listener left open and its clients hanging).
func TestServeGoesOnAfterEMFILE(t *testing.T) {
	a := startApp(t, "a", 101, nil)
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name  string
		serve func(set *Set, ln net.Listener) (serve func() error, shutdown func(context.Context) error)
	}{
		{"http", func(set *Set, ln net.Listener) (func() error, func(context.Context) error) {
			p := NewHTTP(set, HTTPOptions{Logger: log})
			return func() error { return p.Serve(ln) }, p.Shutdown
		}},
		{"tcp", func(set *Set, ln net.Listener) (func() error, func(context.Context) error) {
			p := NewTCP(set, TCPOptions{Logger: log})
			return func() error { return p.Serve(ln) }, p.Shutdown
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := NewSet(SetOptions{})
			mustSet(t, set, a.backend(1))
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ln := &emfileListener{Listener: inner}
			ln.fails.Store(3)
			serve, shutdown := tc.serve(set, ln)
			served := make(chan error, 1)
			go func() { served <- serve() }()
			client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			for i := range 2 {
				resp, err := client.Get("http://" + inner.Addr().String() + "/")
				if err != nil {
					select {
					case serr := <-served:
						t.Fatalf("request %d: %v; Serve returned %v", i, err, serr)
					default:
						t.Fatalf("request %d: %v", i, err)
					}
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != "ok from a\n" {
					t.Fatalf("request %d: %q", i, body)
				}
			}
			if n := ln.fails.Load(); n >= 0 {
				t.Fatalf("%d EMFILE errors left: the test did not run", n+1)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
			if err := <-served; !errors.Is(err, ErrClosed) {
				t.Errorf("Serve returned %v, want ErrClosed", err)
			}
		})
	}
}
