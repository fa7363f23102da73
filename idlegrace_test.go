package baton

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/baton-go/baton/httpdrain"
)

func TestIdleGraceDefaults(t *testing.T) {
	for _, tc := range []struct {
		in, want time.Duration
	}{
		{0, 2 * time.Second}, // zero: the default
		{-1, -1},             // negative: no grace, kept as it is
		{-time.Second, -time.Second},
		{500 * time.Millisecond, 500 * time.Millisecond},
	} {
		u := newTestUpgrader(t, Options{IdleGrace: tc.in})
		if got := u.IdleGrace(); got != tc.want {
			t.Errorf("Options.IdleGrace %v: IdleGrace() = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// "No grace" flows from baton's Options through Upgrader.IdleGrace into
// httpdrain: an idle keep-alive connection is closed at once.
func TestNoIdleGraceReachesHTTPDrain(t *testing.T) {
	u := newTestUpgrader(t, Options{IdleGrace: -1})
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpdrain.New(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})}, httpdrain.Options{IdleGrace: u.IdleGrace(), Logger: slog.New(slog.DiscardHandler)})
	go srv.Serve(ln)
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	u.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := srv.Drain(ctx)
	if err != nil || rep.ConnsAtStart != 1 || rep.IdleWaited != 0 {
		t.Fatalf("drain with Options.IdleGrace < 0: %+v, %v (want one idle conn, no grace)", rep, err)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("idle connection still open after the drain")
	}
}
