// Package httpdrain drains an [http.Server] without losing requests when
// its listening socket has been handed over to another process.
//
// During a hot upgrade the old process and the new process hold file
// descriptors of the same kernel listening socket. The old process must stop
// serving, but [http.Server.Shutdown] alone loses requests in that setting:
//
//   - a connection accepted just before the listener was closed, whose first
//     request has not been read yet, is dropped once Shutdown has started
//     (see https://go.dev/issue/65802);
//   - closing idle keep-alive connections races with clients that send their
//     next request at that very moment: they see EOF or a reset, and clients
//     that never retry (POST) lose the request;
//   - hijacked connections (WebSocket) are not tracked by Shutdown at all.
//
// [Server.Drain] performs a "lame duck" drain instead:
//
//  1. From the moment Drain is called every response carries
//     "Connection: close" (HTTP/2: see step 4), including responses of handlers
//     that were already running, provided they had not written their header
//     yet. Each keep-alive client thus learns on its next request that it must
//     reconnect, and its new connection is accepted by the new process.
//     Hijacked connections registered with [Server.Hijacked] are notified.
//  2. The listeners passed to [Server.Serve] are closed (only this process's
//     descriptors; the socket stays open in the new process) and Drain waits
//     for Serve to return, so every accepted connection is known.
//  3. Drain waits, at most [Options.NewConnWait], until no connection is
//     waiting for its first request, so that each of them is served.
//  4. Idle connections are left open for [Options.IdleGrace], or until no
//     connection is left at all, whichever comes first. Only then
//     [http.Server.Shutdown] closes what is idle and waits for the rest.
//     HTTP/2 connections get a two-phase GOAWAY instead of net/http's
//     single one (which refuses streams already on their way): at the
//     drain start a GOAWAY that refuses nothing and a PING, and net/http's
//     final GOAWAY (at Shutdown) only once the PING's acknowledgement
//     has arrived (waited for at most [Options.NewConnWait]); see http2.go.
//  5. When the context passed to Drain expires, the remaining connections,
//     including hijacked ones registered with [Server.Hijacked], are closed
//     and counted in the [Report].
//
// When the listener given to [Server.Serve] is a [Migrator] (baton's
// listeners are, once their generation has handed over), the drain does
// better than step 4 for HTTP/1.x: right after step 2 every connection
// that waits for its next request with nothing of it read is passed to
// the next server, which serves it as if it had just accepted it; a
// connection busy with a request is passed once its response is written
// (that response keeps the connection alive). The claim is exact: a
// connection whose next request has started to arrive is answered here
// instead (see migrate.go). TLS, HTTP/2 and hijacked connections, and
// those the Migrator refuses, are drained by the steps above.
//
// Use [New] to wrap the server and [Server.Serve] instead of
// [http.Server.Serve].
package httpdrain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Default values of [Options] fields.
const (
	DefaultIdleGrace   = 2 * time.Second
	DefaultNewConnWait = 1 * time.Second
)

// ErrForced is wrapped by the error [Server.Drain] returns when its context
// expired before the drain completed, so that connections had to be closed
// forcibly (or handlers were still running). The returned error also wraps
// the context's error.
var ErrForced = errors.New("httpdrain: drain deadline expired, connections force-closed")

// Options tune a drain. Zero values mean defaults.
type Options struct {
	// IdleGrace is how long idle keep-alive connections are left open
	// after the drain starts, so that their clients can send one more
	// request, receive "Connection: close" and move to the new process.
	// The grace ends early as soon as no connection is left.
	// Zero means DefaultIdleGrace; a negative value means no grace: idle
	// connections are closed as soon as the listeners are closed and the
	// just-accepted connections are served (Report.IdleWaited is then
	// zero). baton's Upgrader.IdleGrace follows the same convention and can
	// be passed as it is.
	IdleGrace time.Duration

	// NewConnWait bounds the wait for connections that were accepted but
	// whose first request has not been read yet, and the wait for HTTP/2
	// clients to acknowledge the first GOAWAY before Shutdown sends the
	// final one.
	// Zero means DefaultNewConnWait; a negative value means no wait.
	NewConnWait time.Duration

	// NoMigration keeps every connection here even when the listener is a
	// [Migrator]: idle connections get the idle grace and are closed.
	NoMigration bool

	// Logger receives a few drain events. Nil means slog.Default().
	Logger *slog.Logger
}

// Report describes a completed drain.
type Report struct {
	Started, Finished time.Time

	// NewConnWaited is the time spent waiting for accepted connections to
	// send their first request (step 3).
	NewConnWaited time.Duration
	// IdleWaited is the time idle connections were left open (step 4).
	IdleWaited time.Duration

	// ConnsAtStart is the number of open HTTP connections when the drain
	// began; HijackedAtStart the number of registered hijacked connections.
	ConnsAtStart    int
	HijackedAtStart int

	// ForcedHTTP is the number of HTTP connections that were still active
	// (or had not sent their first request yet) at the deadline and were
	// closed by [http.Server.Close]. Idle connections closed at the
	// deadline are not counted: no request was lost on them.
	ForcedHTTP int
	// ForcedHijacked is the number of hijacked connections still
	// registered at the deadline, which Drain closed.
	ForcedHijacked int
	// HTTP2GoAways is the number of HTTP/2 connections sent the first
	// phase of the two-phase GOAWAY; HTTP2Unacked the number of those whose
	// client had not acknowledged it when Shutdown sent the final GOAWAY
	// (their streams in flight may have been refused).
	HTTP2GoAways int
	HTTP2Unacked int

	// Migrated is the number of connections passed to the server that
	// serves next (see [Migrator]); MigrationFailed the number that
	// MigrateConns did not pass, which were drained here.
	Migrated        int
	MigrationFailed int

	// HandlersAtDeadline is the number of handlers still running when the
	// deadline expired (zero if the drain completed in time). It includes
	// handlers of force-closed connections and handlers of hijacked
	// connections that were never registered with [Server.Hijacked].
	HandlersAtDeadline int
}

// Server wraps an [http.Server] to drain it without losing requests.
// Create it with [New].
type Server struct {
	srv       *http.Server
	opts      Options
	handler   http.Handler                                    // user handler, nil means http.DefaultServeMux
	connState func(net.Conn, http.ConnState)                  // user hook, may be nil
	connCtx   func(context.Context, net.Conn) context.Context // user hook, may be nil

	migrators   map[Migrator]struct{} // of the listeners served (migrate.go); under mu
	migrateOpen atomic.Bool           // the drain passes conns on (until migrate ends)

	draining     atomic.Bool  // Drain was called: responses get "Connection: close"
	drainStarted atomic.Int64 // when, as monoNow (set before draining)
	handlers     atomic.Int64 // running handlers

	mu        sync.Mutex
	changed   chan struct{} // closed (and reset to nil) on every change; created by waiters
	conns     map[net.Conn]http.ConnState
	newConns  int // conns in StateNew
	listeners map[*net.Listener]struct{}
	serving   int // running Serve calls
	hijacked  map[*hijackedConn]struct{}
	started   bool          // Drain was called (same as draining, but under mu)
	done      chan struct{} // closed when the first Drain returns
	report    Report        // valid once done is closed
	err       error         // valid once done is closed

	// HTTP/2 (http2.go)
	h2Once      sync.Once            // wraps the TLSNextProto entries
	h2conns     map[net.Conn]*h2Conn // by the conn ConnState reports for StateNew
	lateGoAways int                  // HTTP/2 conns that started after Drain
}

// New wraps srv. It replaces srv.Handler, srv.ConnState and
// srv.ConnContext with its own hooks, which call the previous ones (a nil
// Handler means [http.DefaultServeMux]). None of these fields may be
// changed afterwards.
//
// srv must then be served with [Server.Serve] and stopped with
// [Server.Drain] rather than through its own methods.
func New(srv *http.Server, opts Options) *Server {
	if opts.IdleGrace == 0 {
		opts.IdleGrace = DefaultIdleGrace
	}
	if opts.NewConnWait == 0 {
		opts.NewConnWait = DefaultNewConnWait
	}
	s := &Server{
		srv:       srv,
		opts:      opts,
		handler:   srv.Handler,
		connState: srv.ConnState,
		connCtx:   srv.ConnContext,
		conns:     make(map[net.Conn]http.ConnState),
		listeners: make(map[*net.Listener]struct{}),
		hijacked:  make(map[*hijackedConn]struct{}),
		h2conns:   make(map[net.Conn]*h2Conn),
		done:      make(chan struct{}),
	}
	srv.Handler = http.HandlerFunc(s.serveHTTP)
	srv.ConnState = s.trackConn
	srv.ConnContext = s.connContext
	return s
}

func (s *Server) logger() *slog.Logger {
	if s.opts.Logger != nil {
		return s.opts.Logger
	}
	return slog.Default()
}

// Serve accepts connections on ln and serves them like
// [http.Server.Serve]. It may be called for several listeners concurrently.
//
// Serve returns nil when it stopped because of [Server.Drain], or because
// ln was closed by someone else (an error wrapping [net.ErrClosed]), which
// is how the listener is taken away at a handover. If Drain has already
// been called, Serve closes ln and returns nil at once. Otherwise it
// returns the error of [http.Server.Serve].
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	key := &ln
	s.listeners[key] = struct{}{}
	s.serving++
	s.mu.Unlock()

	mig, _ := ln.(Migrator)
	if s.opts.NoMigration {
		mig = nil
	}
	if mig != nil {
		s.mu.Lock()
		if s.migrators == nil {
			s.migrators = map[Migrator]struct{}{}
		}
		s.migrators[mig] = struct{}{}
		s.mu.Unlock()
	}
	err := s.srv.Serve(twoPhaseListener{Listener: ln, s: s, mig: mig})

	s.mu.Lock()
	delete(s.listeners, key)
	s.serving--
	s.broadcastLocked()
	draining := s.started
	s.mu.Unlock()

	if draining || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Draining reports whether [Server.Drain] has been called.
func (s *Server) Draining() bool { return s.draining.Load() }

// Drain stops s without losing requests, following the steps described in
// the package documentation. The deadline of ctx is the drain deadline:
// when ctx is done, whatever is left is closed. Without a deadline, Drain
// waits as long as connections stay active, like [http.Server.Shutdown].
//
// Besides HTTP connections, Drain waits for connections registered with
// [Server.Hijacked] to be released and for handlers still running on
// hijacked connections to return.
//
// Drain works whether or not Serve is running; listeners that were already
// closed by someone else are fine.
//
// Drain returns an error only if ctx expired before the drain completed;
// the error then wraps both [ErrForced] and ctx.Err(), and the Report
// counts what was closed. The Report is valid in every case.
//
// Drain may be called more than once, also concurrently: later calls wait
// for the first one and return the same Report and error. If their own ctx
// expires first, they return a zero Report and ctx.Err().
func (s *Server) Drain(ctx context.Context) (Report, error) {
	// Connections are passed on only when a listener can pass them now;
	// known before the first response is written without "Connection:
	// close" for that reason.
	ready := s.migrationReady()
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		select {
		case <-s.done:
			return s.report, s.err
		case <-ctx.Done():
			return Report{}, ctx.Err()
		}
	}
	s.started = true
	s.migrateOpen.Store(ready && !s.opts.NoMigration)
	s.drainStarted.Store(monoNow())
	s.draining.Store(true) // from now on responses carry "Connection: close"
	rep := Report{
		Started:         time.Now(),
		ConnsAtStart:    len(s.conns),
		HijackedAtStart: len(s.hijacked),
	}
	lns := make([]net.Listener, 0, len(s.listeners))
	for ln := range s.listeners {
		lns = append(lns, *ln)
	}
	for h := range s.hijacked {
		h.notifyOnce()
	}
	s.mu.Unlock()

	// Step 4's first phase for HTTP/2, at once: a client learns that it
	// must go elsewhere as early as an HTTP/1 client does.
	rep.HTTP2GoAways = s.startGoAways()

	log := s.logger()
	log.Info("httpdrain: drain started", "conns", rep.ConnsAtStart, "hijacked", rep.HijackedAtStart, "listeners", len(lns), "http2", rep.HTTP2GoAways)

	// Step 2: stop accepting. Close in the background: a listener whose
	// Close blocks must not block the drain (or Shutdown later). Once
	// Serve has returned, every accepted conn has been reported as
	// StateNew by net/http.
	for _, ln := range lns {
		go ln.Close() // error ignored: already closed by the handover is fine
	}
	s.wait(ctx, 0, func() bool { return s.serving == 0 })

	// Idle HTTP/1.x conns (and those that turn idle) go to the server that
	// serves next, when the listeners can pass them (migrate.go).
	if s.migrating() {
		s.migrate(ctx, &rep)
		s.migrateOpen.Store(false)
		if rep.Migrated > 0 || rep.MigrationFailed > 0 {
			log.Info("httpdrain: connections passed on", "migrated", rep.Migrated, "failed", rep.MigrationFailed)
		}
	}

	// Step 3: let just-accepted conns send their first request. Shutdown
	// would drop it (go.dev/issue/65802).
	t := time.Now()
	s.wait(ctx, s.opts.NewConnWait, func() bool { return s.newConns == 0 })
	rep.NewConnWaited = time.Since(t)

	// Step 4: leave idle conns open so that their next request is served
	// (with "Connection: close") instead of racing with their closing. Stop
	// early when no conn is left so the process can exit right away. A
	// negative IdleGrace skips this step.
	if s.opts.IdleGrace >= 0 {
		t = time.Now()
		s.wait(ctx, s.opts.IdleGrace, func() bool { return len(s.conns) == 0 })
		rep.IdleWaited = time.Since(t)
	}

	// Shutdown sends net/http's GOAWAY, the final one: every HTTP/2 client
	// must have acknowledged the first phase by then, or streams it has
	// sent since may be refused.
	s.wait(ctx, s.opts.NewConnWait, func() bool { return s.unackedLocked() == 0 })
	s.mu.Lock()
	rep.HTTP2GoAways += s.lateGoAways
	rep.HTTP2Unacked = s.unackedLocked()
	s.mu.Unlock()
	if rep.HTTP2Unacked > 0 {
		log.Warn("httpdrain: HTTP/2 clients did not acknowledge the first GOAWAY in time", "conns", rep.HTTP2Unacked)
	}

	// Shutdown closes idle conns and sends GOAWAY on HTTP/2 conns. It
	// polls for the others every 500 ms at most; our own tracking notices
	// the last one closing at once, so stop Shutdown then. Its error
	// carries nothing we need: ctx expiry is checked below.
	shutCtx, cancel := context.WithCancel(ctx)
	shutDone := make(chan struct{})
	go func() {
		s.srv.Shutdown(shutCtx)
		close(shutDone)
	}()
	s.wait(ctx, 0, func() bool { return len(s.conns) == 0 })
	cancel()
	<-shutDone

	// Handlers of hijacked conns run beyond Shutdown; wait for them too, so
	// that a conn registered with Hijacked right after Shutdown returned
	// is not missed.
	s.wait(ctx, 0, func() bool { return len(s.hijacked) == 0 && s.handlers.Load() == 0 })

	var incomplete bool
	if ctx.Err() != nil {
		incomplete = s.force(&rep)
	}
	rep.Finished = time.Now()

	var err error
	if incomplete {
		err = fmt.Errorf("%w (%d http, %d hijacked, %d handlers running): %w",
			ErrForced, rep.ForcedHTTP, rep.ForcedHijacked, rep.HandlersAtDeadline, ctx.Err())
		log.Warn("httpdrain: drain deadline expired", "forced_http", rep.ForcedHTTP,
			"forced_hijacked", rep.ForcedHijacked, "handlers", rep.HandlersAtDeadline,
			"duration", rep.Finished.Sub(rep.Started))
	} else {
		log.Info("httpdrain: drain finished", "duration", rep.Finished.Sub(rep.Started),
			"conns_at_start", rep.ConnsAtStart, "http2_goaways", rep.HTTP2GoAways)
	}

	s.mu.Lock()
	s.report, s.err = rep, err
	close(s.done)
	s.mu.Unlock()
	return rep, err
}

// force closes what is left at the deadline, counts it in rep and reports
// whether anything was left.
func (s *Server) force(rep *Report) (incomplete bool) {
	s.mu.Lock()
	for _, st := range s.conns {
		if st != http.StateIdle {
			rep.ForcedHTTP++
		}
	}
	hs := make([]*hijackedConn, 0, len(s.hijacked))
	for h := range s.hijacked {
		hs = append(hs, h)
	}
	s.mu.Unlock()
	rep.HandlersAtDeadline = int(s.handlers.Load())

	s.srv.Close() // also closes conns that became idle after Shutdown's last poll
	for _, h := range hs {
		// Count only conns we actually closed, not those the app closed
		// without calling release.
		if h.c.Close() == nil {
			rep.ForcedHijacked++
		}
	}
	return rep.ForcedHTTP > 0 || rep.ForcedHijacked > 0 || rep.HandlersAtDeadline > 0
}

// Hijacked registers c, a connection hijacked from s (for example a
// WebSocket), so that Drain can end it. When the drain starts (or at once,
// if it has already started) notify is called once, in its own goroutine,
// so that the application can close the connection gracefully, for example
// by sending a WebSocket close frame. Connections still registered at the
// drain deadline are closed and counted in [Report.ForcedHijacked].
//
// The returned release function unregisters c; call it when the
// connection ends. It may be called more than once. Drain waits for
// registered connections to be released. notify may be nil.
//
// Register the connection in the handler that hijacked it, before the
// handler returns: Drain waits for running handlers, but not for hijacked
// connections whose handler has returned without registering them.
func (s *Server) Hijacked(c net.Conn, notify func()) (release func()) {
	h := &hijackedConn{c: c, notify: notify}
	s.mu.Lock()
	s.hijacked[h] = struct{}{}
	started := s.started
	s.mu.Unlock()
	if started {
		h.notifyOnce()
	}
	return func() {
		s.mu.Lock()
		delete(s.hijacked, h)
		s.broadcastLocked()
		s.mu.Unlock()
	}
}

type hijackedConn struct {
	c      net.Conn
	notify func()
	once   sync.Once
}

func (h *hijackedConn) notifyOnce() {
	if h.notify != nil {
		h.once.Do(func() { go h.notify() })
	}
}

// trackConn is the http.Server.ConnState hook.
func (s *Server) trackConn(c net.Conn, st http.ConnState) {
	// net/http's HTTP/2 server reports the h2Conn it was given; the
	// ConnState hook sees, and the maps hold, the conn net/http accepted.
	c = h2Key(c)
	if m, ok := c.(*migratedConn); ok {
		m.setState(st) // before the waiters below are woken
	}
	s.mu.Lock()
	if prev, ok := s.conns[c]; ok && prev == http.StateNew {
		s.newConns--
	}
	switch st {
	case http.StateNew, http.StateActive, http.StateIdle:
		s.conns[c] = st
		if st == http.StateNew {
			s.newConns++
		}
	default: // StateHijacked, StateClosed: no longer net/http's business
		delete(s.conns, c)
		delete(s.h2conns, c)
	}
	s.broadcastLocked()
	s.mu.Unlock()
	if s.connState != nil {
		s.connState(c, st)
	}
}

// serveHTTP is the http.Server.Handler.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.handlers.Add(1)
	defer func() {
		// Only a drain waits for handlers; don't take the lock otherwise.
		if s.handlers.Add(-1) == 0 && s.draining.Load() {
			s.mu.Lock()
			s.broadcastLocked()
			s.mu.Unlock()
		}
	}()
	h := s.handler
	if h == nil {
		h = http.DefaultServeMux
	}
	rw := &responseWriter{ResponseWriter: w, s: s}
	if m, ok := r.Context().Value(connKey{}).(*migratedConn); ok && r.ProtoMajor == 1 {
		m.markHTTP1()
		rw.mc = m
	}
	if r.ProtoMajor == 2 {
		// The two-phase GOAWAY ends this conn, not "Connection: close"
		// (net/http's single GOAWAY).
		_, rw.twoPhase = r.Context().Value(h2ConnKey{}).(*h2Conn)
	}
	h.ServeHTTP(rw, r)
}

// connKey is the request context key of the *migratedConn a request came
// on.
type connKey struct{}

// connContext is the http.Server.ConnContext hook.
func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	if s.connCtx != nil {
		ctx = s.connCtx(ctx, c)
	}
	if m, ok := c.(*migratedConn); ok {
		ctx = context.WithValue(ctx, connKey{}, m)
	}
	return ctx
}

// broadcastLocked wakes up the waiters. s.mu must be held.
func (s *Server) broadcastLocked() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// wait blocks until cond, evaluated with s.mu held, is true, max has
// elapsed (if max > 0) or ctx is done. A negative max means no wait.
func (s *Server) wait(ctx context.Context, max time.Duration, cond func() bool) {
	if max < 0 {
		return
	}
	var timeout <-chan time.Time
	if max > 0 {
		t := time.NewTimer(max)
		defer t.Stop()
		timeout = t.C
	}
	for {
		s.mu.Lock()
		if cond() {
			s.mu.Unlock()
			return
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			return
		case <-ctx.Done():
			return
		}
	}
}
