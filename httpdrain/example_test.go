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
	"time"

	"github.com/baton-go/baton/httpdrain"
)

// A service serves with httpdrain and drains when its listening socket has
// been handed over to the new process.
func Example() {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello\n")
	})}
	s := httpdrain.New(srv, httpdrain.Options{
		IdleGrace: 2 * time.Second,
		Logger:    slog.New(slog.DiscardHandler), // quiet example
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print("response: ", string(body))
	http.DefaultClient.CloseIdleConnections() // otherwise the drain keeps it for IdleGrace

	// Handover done: the new process accepts on the socket. Drain the old
	// server; the deadline bounds how long in-flight requests may take.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := s.Drain(ctx)
	fmt.Println("drain error:", err)
	fmt.Println("forced:", rep.ForcedHTTP+rep.ForcedHijacked)
	fmt.Println("Serve returned:", <-served)

	// Output:
	// response: hello
	// drain error: <nil>
	// forced: 0
	// Serve returned: <nil>
}

// When the drain deadline expires, what is left is closed and counted, and
// the error wraps ErrForced.
func ExampleServer_Drain_deadline() {
	stuck := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(stuck)
		<-r.Context().Done() // never finishes on its own
	})}
	s := httpdrain.New(srv, httpdrain.Options{Logger: slog.New(slog.DiscardHandler)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go s.Serve(ln)

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: example\r\n\r\n")
	<-stuck

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	rep, err := s.Drain(ctx)
	fmt.Println("forced:", errors.Is(err, httpdrain.ErrForced))
	fmt.Println("deadline:", errors.Is(err, context.DeadlineExceeded))
	fmt.Println("force-closed HTTP connections:", rep.ForcedHTTP)

	// Output:
	// forced: true
	// deadline: true
	// force-closed HTTP connections: 1
}

// A handler that hijacks its connection (as WebSocket libraries do)
// registers it, so that the drain can ask it to close and close it at the
// deadline.
func ExampleServer_Hijacked() {
	var s *httpdrain.Server
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		closing := make(chan struct{})
		release := s.Hijacked(conn, func() { close(closing) })
		defer release()

		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: demo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		// A real application serves messages until the drain starts,
		// then sends a close frame.
		<-closing
		brw.WriteString("goodbye\n")
		brw.Flush()
	})}
	s = httpdrain.New(srv, httpdrain.Options{Logger: slog.New(slog.DiscardHandler)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go s.Serve(ln)

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: example\r\nUpgrade: demo\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(resp.Status)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := s.Drain(ctx)
	line, _ := br.ReadString('\n')
	fmt.Print("client got: ", line)
	fmt.Println("hijacked at start:", rep.HijackedAtStart, "forced:", rep.ForcedHijacked, "error:", err)

	// Output:
	// 101 Switching Protocols
	// client got: goodbye
	// hijacked at start: 1 forced: 0 error: <nil>
}
