package httpdrain

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// HTTP/2: the two-phase GOAWAY.
//
// net/http's HTTP/2 server ends a connection gracefully (a response with
// "Connection: close", or Shutdown) with a single GOAWAY frame whose last
// stream id is the highest stream it has read so far, and then discards
// every stream above it. A client multiplexing requests over the
// connection has usually sent some of those already: they are refused, and
// a client that does not retry (a POST whose body cannot be re-sent) loses
// them. Measured on 20 upgrades of examples/hello under 12 concurrent
// non-retrying POST streams: 83 of 32,096 requests lost over h2c, 95 of
// 28,108 over TLS (test/e2e/http2_test.go).
//
// RFC 9113 section 6.8 describes the remedy, which net/http does not
// implement: first a GOAWAY with the last stream id 2^31-1 (no stream is
// refused; the client only learns that it must open no new stream here)
// and a PING; once the PING's acknowledgement arrives, every stream the
// client opened before it had seen the GOAWAY has arrived too, and only
// then the real GOAWAY. httpdrain does the first phase itself, by writing
// the two frames into the connection between two of net/http's frames,
// and lets net/http send the final GOAWAY (at Shutdown) only after the
// acknowledgement and the idle grace.
//
// To see the HTTP/2 frames, httpdrain hands each HTTP/2 connection to
// net/http's HTTP/2 server wrapped in an h2Conn, through the
// http.Server.TLSNextProto hook: the "h2" entry (TLS, negotiated by ALPN)
// and the "unencrypted_http2" entry net/http uses internally to pass on
// h2c connections. A TLS connection reaches the HTTP/2 server as an h2Conn
// around the *tls.Conn, through the unencrypted entry (which accepts any
// net.Conn), after httpdrain has read the client preface; the h2Conn
// reports the TLS ConnectionState, so that requests still carry
// Request.TLS and the server still checks the TLS version and cipher
// suite. When either entry is missing (HTTP/2 disabled, or a Go release
// without the unencrypted entry), connections are served as before and
// end with net/http's single GOAWAY.

const (
	nextProtoH2          = "h2"
	nextProtoUnencrypted = "unencrypted_http2" // net/http's key for h2c handoffs
	clientPreface        = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	prefaceTimeout       = 10 * time.Second // net/http's own bound for the preface

	frameHeaderLen = 9
	frameGoAway    = 0x7
	framePing      = 0x6
	flagAck        = 0x1
)

// pingData marks the PING of the first phase; the client echoes it in its
// acknowledgement.
var pingData = [8]byte{'h', 't', 't', 'p', 'd', 'r', 'n', '1'}

// goAwayFrames is the first phase: GOAWAY(last stream 2^31-1, NO_ERROR)
// and PING(pingData).
var goAwayFrames = func() []byte {
	b := []byte{
		0, 0, 8, frameGoAway, 0, 0, 0, 0, 0, // length 8, stream 0
		0x7f, 0xff, 0xff, 0xff, // last stream id
		0, 0, 0, 0, // NO_ERROR
		0, 0, 8, framePing, 0, 0, 0, 0, 0,
	}
	return append(b, pingData[:]...)
}()

type h2ConnKey struct{}

// installHTTP2 wraps the HTTP/2 entries of srv.TLSNextProto. It runs once,
// after http.Server.Serve has set them up and before the first
// connection is accepted (see twoPhaseListener).
func (s *Server) installHTTP2() {
	next := s.srv.TLSNextProto
	serveUnencrypted := next[nextProtoUnencrypted]
	if serveUnencrypted == nil {
		return
	}
	next[nextProtoUnencrypted] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
		inner, ok := c.NetConn().(interface{ UnencryptedNetConn() net.Conn })
		if !ok {
			serveUnencrypted(hs, c, h)
			return
		}
		raw := inner.UnencryptedNetConn()
		hc := s.newH2Conn(raw, raw)
		serveUnencrypted(hs, tls.Client(unencryptedConn{conn: hc}, nil), hc.handler(h))
	}
	if next[nextProtoH2] != nil {
		next[nextProtoH2] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
			if err := readPreface(c); err != nil {
				s.logger().Debug("httpdrain: no HTTP/2 preface", "remote", c.RemoteAddr(), "err", err)
				c.Close()
				return
			}
			hc := s.newH2Conn(c, c)
			serveUnencrypted(hs, tls.Client(unencryptedConn{conn: &h2TLSConn{hc, c}}, nil), hc.handler(h))
		}
	}
}

func readPreface(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(prefaceTimeout))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, len(clientPreface))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != clientPreface {
		return errors.New("bad client preface")
	}
	return nil
}

// unencryptedConn carries a connection to net/http's "unencrypted_http2"
// entry, which takes a *tls.Conn whose NetConn has this method.
type unencryptedConn struct {
	net.Conn // nil: only UnencryptedNetConn is used
	conn     net.Conn
}

func (c unencryptedConn) UnencryptedNetConn() net.Conn { return c.conn }

// twoPhaseListener installs the TLSNextProto wrappers on the first Accept:
// http.Server.Serve has set TLSNextProto up by then, and no connection has
// been handed to it yet.
type twoPhaseListener struct {
	net.Listener
	s   *Server
	mig Migrator // nil: the conns stay here (migrate.go)
}

func (l twoPhaseListener) Accept() (net.Conn, error) {
	l.s.h2Once.Do(l.s.installHTTP2)
	c, err := l.Listener.Accept()
	if err != nil || l.mig == nil {
		return c, err
	}
	return newMigratedConn(c, l.s, l.mig), nil
}

// h2Conn is an HTTP/2 connection as net/http's HTTP/2 server sees it. It
// follows the frame boundaries of what the server writes, so that the
// first GOAWAY phase can go in between two frames, and watches what it
// reads for the acknowledgement of its PING.
type h2Conn struct {
	net.Conn          // what the frames travel on: the TCP conn (h2c) or the *tls.Conn
	key      net.Conn // the conn net/http reports to ConnState for StateNew/StateClosed
	s        *Server

	wmu       sync.Mutex
	out       frameCursor // server -> client
	wroteAny  bool        // the server's preface (its SETTINGS) is out
	goAwayDue bool        // the drain asked for the first phase
	sent      atomic.Bool // the first phase was written (or could not be)

	in    frameCursor // client -> server; read by net/http's one reader goroutine
	ping  []byte      // payload of a PING ACK being read
	acked atomic.Bool // our PING came back: the client has seen the GOAWAY
}

// h2TLSConn is an h2Conn on TLS: it reports the TLS state, so that the
// HTTP/2 server applies its TLS checks.
type h2TLSConn struct {
	*h2Conn
	tc *tls.Conn
}

func (c *h2TLSConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

func (s *Server) newH2Conn(c, key net.Conn) *h2Conn {
	if m, ok := key.(*migratedConn); ok {
		m.markHTTP2() // an HTTP/2 conn's state lives here: never passed on
	}
	hc := &h2Conn{Conn: c, key: key, s: s}
	s.mu.Lock()
	s.h2conns[key] = hc
	due := s.started
	if due {
		s.lateGoAways++
	}
	s.mu.Unlock()
	if due {
		hc.goAway()
	}
	return hc
}

// handler passes hc to the requests of the connection (see serveHTTP),
// through the base context net/http's HTTP/2 server asks its handler for.
func (hc *h2Conn) handler(h http.Handler) http.Handler {
	ctx := context.Background()
	if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
		ctx = bc.BaseContext()
	}
	return h2Handler{Handler: h, ctx: context.WithValue(ctx, h2ConnKey{}, hc)}
}

type h2Handler struct {
	http.Handler
	ctx context.Context
}

func (h h2Handler) BaseContext() context.Context { return h.ctx }

// goAway asks for the first phase; it is written at once if the server is
// between two frames, else right after the frame being written. It never
// blocks the caller on the network.
func (hc *h2Conn) goAway() {
	if hc.wmu.TryLock() {
		hc.goAwayDue = true
		hc.flushGoAwayLocked()
		hc.wmu.Unlock()
		return
	}
	go func() {
		hc.wmu.Lock()
		hc.goAwayDue = true
		hc.flushGoAwayLocked()
		hc.wmu.Unlock()
	}()
}

func (hc *h2Conn) flushGoAwayLocked() {
	if !hc.goAwayDue || hc.sent.Load() || !hc.wroteAny || !hc.out.atBoundary() {
		return
	}
	if _, err := hc.Conn.Write(goAwayFrames); err != nil {
		// The conn is broken; net/http finds out on its next write.
		hc.acked.Store(true) // nothing to wait for
	}
	hc.sent.Store(true)
	hc.s.changedNow()
}

func (hc *h2Conn) Write(p []byte) (int, error) {
	hc.wmu.Lock()
	defer hc.wmu.Unlock()
	n, err := hc.Conn.Write(p)
	if n > 0 {
		hc.out.advance(p[:n], nil)
		hc.wroteAny = true
	}
	if err == nil {
		hc.flushGoAwayLocked()
	}
	return n, err
}

func (hc *h2Conn) Read(p []byte) (int, error) {
	n, err := hc.Conn.Read(p)
	if n > 0 {
		var watch func(*[frameHeaderLen]byte, []byte, bool)
		if hc.sent.Load() && !hc.acked.Load() {
			watch = hc.watchPing
		}
		hc.in.advance(p[:n], watch)
	}
	return n, err
}

// watchPing gets the payload bytes of each incoming frame, in pieces.
func (hc *h2Conn) watchPing(hdr *[frameHeaderLen]byte, payload []byte, last bool) {
	if hdr[3] != framePing || hdr[4]&flagAck == 0 || hdr[0] != 0 || hdr[1] != 0 || int(hdr[2]) != len(pingData) {
		return
	}
	hc.ping = append(hc.ping, payload...)
	if !last {
		return
	}
	if bytes.Equal(hc.ping, pingData[:]) {
		// net/http reads a frame only after it has processed the one
		// before: every stream the client opened before this ACK is known
		// to the server now.
		hc.acked.Store(true)
		hc.s.changedNow()
	}
	hc.ping = hc.ping[:0]
}

// frameCursor follows frame boundaries in a byte stream that starts at a
// frame boundary.
type frameCursor struct {
	hdr  [frameHeaderLen]byte
	hdrN int // bytes of hdr filled
	left int // payload bytes still to come
}

func (f *frameCursor) atBoundary() bool { return f.hdrN == 0 && f.left == 0 }

// advance consumes p; payload, when not nil, gets the payload bytes of
// each frame (last: the frame's payload is complete).
func (f *frameCursor) advance(p []byte, payload func(hdr *[frameHeaderLen]byte, b []byte, last bool)) {
	for len(p) > 0 {
		if f.left > 0 {
			n := min(len(p), f.left)
			f.left -= n
			if payload != nil {
				payload(&f.hdr, p[:n], f.left == 0)
			}
			p = p[n:]
			continue
		}
		n := copy(f.hdr[f.hdrN:], p)
		f.hdrN += n
		p = p[n:]
		if f.hdrN == frameHeaderLen {
			f.hdrN = 0
			f.left = int(f.hdr[0])<<16 | int(f.hdr[1])<<8 | int(f.hdr[2])
			if f.left == 0 && payload != nil {
				payload(&f.hdr, nil, true)
			}
		}
	}
}

// h2Key returns the conn net/http reports for StateNew and StateClosed,
// for the conn its HTTP/2 server reports for StateActive and StateIdle.
func h2Key(c net.Conn) net.Conn {
	switch hc := c.(type) {
	case *h2Conn:
		return hc.key
	case *h2TLSConn:
		return hc.key
	}
	return c
}

// startGoAways starts the first phase on every HTTP/2 connection.
func (s *Server) startGoAways() int {
	s.mu.Lock()
	hcs := make([]*h2Conn, 0, len(s.h2conns))
	for _, hc := range s.h2conns {
		hcs = append(hcs, hc)
	}
	s.mu.Unlock()
	for _, hc := range hcs {
		hc.goAway()
	}
	return len(hcs)
}

// unackedLocked counts the HTTP/2 connections whose client has not
// answered the first phase yet. s.mu must be held.
func (s *Server) unackedLocked() int {
	n := 0
	for _, hc := range s.h2conns {
		if !hc.acked.Load() {
			n++
		}
	}
	return n
}

func (s *Server) changedNow() {
	s.mu.Lock()
	s.broadcastLocked()
	s.mu.Unlock()
}
