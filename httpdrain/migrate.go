package httpdrain

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// Migrator is implemented by a listener whose connections can be passed to
// the server that takes its socket over (baton's listeners, in a generation
// that has handed over). When the listener given to [Server.Serve]
// implements it, a drain passes every HTTP/1.x connection that is idle,
// with nothing of its next request read, to MigrateConns instead of
// leaving it open for [Options.IdleGrace] and then closing it; a
// connection busy with a request at the drain start is passed as soon as
// its response is written. Connections that are not passed (TLS,
// HTTP/2, hijacked, or those MigrateConns refused) are drained as before.
type Migrator interface {
	// MigrateConns passes conns to the server that serves next and
	// returns how many it passed: conns[:n] are served there from now on
	// (the drain then closes its own descriptors of them, which the
	// client does not notice); conns[n:] were not passed, err says why,
	// and this server keeps serving them. Each conn is one the
	// listener's Accept returned. A Server makes up to four calls at
	// once (the next batches are claimed while earlier ones travel);
	// each returns its own count. When ctx ends (the drain's deadline),
	// MigrateConns should return soon.
	MigrateConns(ctx context.Context, conns []net.Conn) (n int, err error)
	// MigrationReady reports whether MigrateConns can pass connections
	// now. A drain asks once, at its start: when no listener is ready (a
	// plain stop, no successor that takes them), it drains as without
	// migration.
	MigrationReady() bool
}

// migrateBatch bounds how many connections are claimed and handed to one
// MigrateConns call (baton passes at most 250 in one message).
const migrateBatch = 250

// netHTTPBufSize is the size of net/http's per-connection read buffer
// (bufio's default): a Read of that length finds the buffer empty.
// TestIdleConnsMigrate fails if net/http changes it (nothing migrates).
const netHTTPBufSize = 4096

// aLongTimeAgo stops a pending Read at once (as net/http does).
var aLongTimeAgo = time.Unix(1, 0)

// claim phases of a migratedConn.
const (
	claimNone         = iota
	claimInterrupting // the claimer stopped the pending Read; its verdict is awaited
	claimHeld         // the Read stopped with nothing read: the reader waits for the claimer
	claimGone         // passed to the next server: Read returns io.EOF from now on
)

// migratedConn wraps every connection accepted from a listener that is a
// [Migrator], so that a drain can take it away exactly: only while
// net/http waits in Read for the next request with its read buffer empty
// and nothing arrived. A claim stops that Read by a deadline in the past;
// if the Read comes back with bytes, the client was first and the
// connection stays (answered here, with "Connection: close"); if it comes
// back empty, no byte was read and the connection can go. Nothing is both
// answered here and passed, and nothing is neither.
//
// net/http sees this type as the connection (ConnState, Hijack); NetConn
// returns the accepted one.
type migratedConn struct {
	net.Conn
	s   *Server
	mig Migrator

	mu       sync.Mutex
	state    http.ConnState // the last ConnState net/http reported for this conn; -1 before
	http1    bool           // an HTTP/1.x request was read from it
	h2       bool           // served as HTTP/2: never passed
	refused  bool           // a MigrateConns call refused it: drained here
	closed   bool
	read     int64     // bytes Read returned
	idleRead int64     // read when net/http last called it idle
	reading  bool      // a Read is pending
	readLen  int       // its len(p): netHTTPBufSize when net/http's buffer is empty
	deadline time.Time // the read deadline net/http asked for (applied after a claim)
	busyAt   time.Time // when the drain found a request arriving (zero: not); waited for NewConnWait at most
	// busyMisses counts the times the drain found a request arriving: a
	// client that sends its next request as soon as it has an answer
	// could keep its conn here until the drain's deadline (each answer
	// resets busyAt), so after maxBusyMisses its answers say "Connection:
	// close" and it is never claimed again (drained here).
	busyMisses int
	// idleInDrain: when net/http first called the conn idle during the
	// drain (monoNow; 0: not yet), from which busyGiveUp runs.
	idleInDrain int64
	phase       int
	verdict     chan struct{} // closed when the stopped Read came back (claimHeld, or claimNone: bytes came)
	decided     chan struct{} // closed when a held conn was passed (claimGone) or kept (claimNone)
}

func newMigratedConn(c net.Conn, s *Server, mig Migrator) *migratedConn {
	return &migratedConn{Conn: c, s: s, mig: mig, state: -1}
}

// NetConn returns the connection the listener accepted.
func (m *migratedConn) NetConn() net.Conn { return m.Conn }

func (m *migratedConn) Read(p []byte) (int, error) {
	for {
		m.mu.Lock()
		if m.phase == claimGone {
			m.mu.Unlock()
			return 0, io.EOF // net/http closes its side; the client is served elsewhere
		}
		m.reading, m.readLen = true, len(p)
		wake := m.state == http.StateIdle || m.state == http.StateNew
		m.mu.Unlock()
		if wake && m.s.draining.Load() {
			m.s.broadcast() // a waiting drain may claim it now (s.mu is never taken under m.mu)
		}

		n, err := m.Conn.Read(p)

		m.mu.Lock()
		m.reading = false
		m.read += int64(n)
		if m.phase != claimInterrupting {
			m.mu.Unlock()
			return n, err
		}
		if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			// The client was first (or the conn failed): it stays.
			m.phase = claimNone
			_ = m.Conn.SetReadDeadline(m.deadline)
			close(m.verdict)
			m.mu.Unlock()
			if n > 0 {
				err = nil
			}
			return n, err
		}
		// Nothing was read: hold net/http here until the claimer decides.
		m.phase = claimHeld
		close(m.verdict)
		decided := m.decided
		m.mu.Unlock()
		<-decided
	}
}

// SetReadDeadline records net/http's deadline; during a claim it is
// applied when the claim ends.
func (m *migratedConn) SetReadDeadline(t time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.deadline = t
	if m.phase != claimNone {
		return nil
	}
	return m.Conn.SetReadDeadline(t)
}

func (m *migratedConn) SetDeadline(t time.Time) error {
	if err := m.SetReadDeadline(t); err != nil {
		return err
	}
	return m.Conn.SetWriteDeadline(t)
}

func (m *migratedConn) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return m.Conn.Close()
}

// CloseWrite keeps net/http's half-close after a "Connection: close"
// response (it avoids a reset while the client still sends).
func (m *migratedConn) CloseWrite() error {
	if cw, ok := m.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return &net.OpError{Op: "close", Net: m.LocalAddr().Network(), Addr: m.LocalAddr(), Err: errors.ErrUnsupported}
}

// ReadFrom keeps the sendfile/splice path of *net.TCPConn.
func (m *migratedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := m.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{m.Conn}, r)
}

// setState records what net/http reported. A request that comes in on
// a conn the drain has had busyGiveUp to take idle (from the first time
// it was idle during the drain) ends its keep-alive:
// a client that sends its next request as soon as it has an answer can
// be quicker than the drain every time (under Wine's scheduling it often
// was: the drain never saw the conn idle, or its claim was interrupted by
// the bytes, which is no busy mark), and its conn would stay here until
// the drain's deadline cut a request in flight.
func (m *migratedConn) setState(st http.ConnState) {
	m.mu.Lock()
	if m.s.draining.Load() {
		now := monoNow()
		switch {
		case st == http.StateIdle && m.idleInDrain == 0:
			m.idleInDrain = now
		case st == http.StateActive && m.state == http.StateIdle:
			since := m.idleInDrain // the first time the drain could have taken it
			if since == 0 {
				since = m.s.drainStarted.Load() // idle since before the drain
			}
			if now-since >= int64(busyGiveUp) {
				m.busyMisses = maxBusyMisses + 1
			}
		}
	}
	m.state = st
	m.busyAt = time.Time{}
	if st == http.StateIdle {
		m.idleRead = m.read
	}
	m.mu.Unlock()
}

// markBusy records that a request was arriving when the drain tried, and
// reports whether it is news (not already marked since its last state).
func (m *migratedConn) markBusy(now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.busyAt.IsZero() {
		return false
	}
	m.busyAt = now
	m.busyMisses++
	return true
}

// maxBusyMisses: how many times a conn may be found with its next request
// arriving and still be kept alive to be passed on once idle (a
// pipelining client's answers fit; a client that never pauses does not).
const maxBusyMisses = 2

// busyGiveUp: how long after the drain could first have taken a conn
// idle its requests may keep coming in first; after that its next answer
// closes it (the client goes on, lossless, on a new connection to the new
// generation). The drain takes an idle conn within milliseconds on Linux.
const busyGiveUp = time.Second

// monoBase makes monoNow monotonic: a clock step moves no limit.
var monoBase = time.Now()

// monoNow is a monotonic time in nanoseconds, never 0.
func monoNow() int64 { return int64(time.Since(monoBase)) + 1 }

func (m *migratedConn) markHTTP1() {
	m.mu.Lock()
	m.http1 = true
	m.mu.Unlock()
}

func (m *migratedConn) markHTTP2() {
	m.mu.Lock()
	m.h2 = true
	m.mu.Unlock()
}

// pendingLocked: the conn may still be passed, now or once the request it
// carries is answered (a new conn whose first request is under way, an
// active one, an idle HTTP/1.x one). m.mu must be held.
func (m *migratedConn) pendingLocked() bool {
	if m.h2 || m.refused || m.closed || m.phase == claimGone || m.busyMisses > maxBusyMisses {
		return false
	}
	switch m.state {
	case http.StateNew, http.StateActive:
		return true
	case http.StateIdle:
		return m.http1
	}
	return false
}

// keepsAlive: a response written now should not close the conn, because
// the drain (still passing conns on) will pass it once idle.
func (m *migratedConn) keepsAlive() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.http1 && m.pendingLocked()
}

// Outcomes of interrupt.
const (
	notNow      = iota // waits for its request, or net/http is not in Read yet
	claimed            // a claim started: wait for the verdict
	busyReading        // bytes of a next request were read here: not this time
)

// interrupt starts a claim if the conn can be taken now: net/http waits in
// Read for a next request with its buffer empty and nothing of that
// request read (or for a first request, nothing read at all). With
// claimed, the returned channel is closed when the stopped Read has come
// back.
func (m *migratedConn) interrupt() (verdict <-chan struct{}, outcome int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.phase != claimNone || !m.pendingLocked() || !m.reading {
		return nil, notNow
	}
	switch m.state {
	case http.StateNew:
		if m.read != 0 {
			return nil, notNow // its first request is under way
		}
	case http.StateIdle:
		// net/http calls a conn active only once a request's whole header
		// is in: bytes read since it went idle (a header split across
		// segments), or held in its buffer (a pipelining client, the
		// byte of its background read), belong to a request it will
		// answer here.
		if m.read != m.idleRead || m.readLen != netHTTPBufSize {
			return nil, busyReading
		}
	default:
		return nil, notNow
	}
	m.phase = claimInterrupting
	m.verdict = make(chan struct{})
	m.decided = make(chan struct{})
	_ = m.Conn.SetReadDeadline(aLongTimeAgo)
	return m.verdict, claimed
}

// held reports whether the stopped Read came back empty (the conn is ours
// to pass); otherwise the claim is over.
func (m *migratedConn) held() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.phase == claimHeld
}

// finish ends a held claim: passed, or kept (never tried again).
func (m *migratedConn) finish(passed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if passed {
		m.phase = claimGone
	} else {
		m.phase = claimNone
		m.refused = true
		_ = m.Conn.SetReadDeadline(m.deadline)
	}
	close(m.decided)
}

// broadcast wakes the drain's waiters.
func (s *Server) broadcast() {
	s.mu.Lock()
	s.broadcastLocked()
	s.mu.Unlock()
}

// migrationReady reports whether a listener served can pass connections
// on now.
func (s *Server) migrationReady() bool {
	s.mu.Lock()
	migs := make([]Migrator, 0, len(s.migrators))
	for m := range s.migrators {
		migs = append(migs, m)
	}
	s.mu.Unlock()
	for _, m := range migs {
		if m.MigrationReady() {
			return true
		}
	}
	return false
}

// migrating reports whether the drain passes connections on now: from its
// start (when a listener's Migrator was ready then) until migrate ends.
func (s *Server) migrating() bool { return s.migrateOpen.Load() }

// migrateWindow bounds the MigrateConns calls in flight at once: while
// earlier batches travel (and the next server registers them), the next
// ones are claimed. At most migrateWindow*migrateBatch conns are held
// waiting for a verdict at any time.
const migrateWindow = 4

// migrate passes connections on until none is left that could still be
// (every pending one is passed, refused, busy reading or gone), or ctx
// ends. It runs before the idle grace, which is then left with what
// stays here. It returns once every MigrateConns call it made has.
func (s *Server) migrate(ctx context.Context, rep *Report) {
	// A conn whose next request is arriving is waited for (it is
	// answered here, then passed) for NewConnWait at most: a client that
	// stopped half-way through a request must not hold the drain.
	busyWait := max(s.opts.NewConnWait, 0)
	var repMu sync.Mutex // rep, updated by the passes
	inFlight := 0
	passEnded := make(chan struct{}, migrateWindow)
	defer func() {
		for ; inFlight > 0; inFlight-- {
			<-passEnded
		}
	}()
	for {
		for reaped := true; reaped && inFlight > 0; { // passes that ended, without waiting
			select {
			case <-passEnded:
				inFlight--
			default:
				reaped = false
			}
		}
		if inFlight == migrateWindow {
			select {
			case <-passEnded:
				inFlight--
			case <-ctx.Done():
				return
			}
		}
		take, pending, expiry, changed := s.migratable(time.Now(), busyWait)
		if !pending || ctx.Err() != nil {
			return // conns held by passes in flight are pending: none is
		}
		held, ended := s.claim(ctx, take)
		for _, h := range held {
			if inFlight == migrateWindow {
				<-passEnded // bounded: MigrateConns honours ctx
				inFlight--
			}
			inFlight++
			go func() {
				s.pass(ctx, h.mig, h.conns, rep, &repMu)
				passEnded <- struct{}{}
			}()
		}
		if len(held) > 0 || ended > 0 {
			continue
		}
		// Nothing could be taken now (requests in flight, net/http not yet
		// waiting in Read, or everything left is on its way): wait for a
		// pass to end, for a change (only with none in flight: every
		// migrated conn's close is one), or for a busy conn's wait to end.
		var timer *time.Timer
		var timeout <-chan time.Time
		if !expiry.IsZero() {
			timer = time.NewTimer(time.Until(expiry))
			timeout = timer.C
		}
		if inFlight > 0 {
			changed = nil
		}
		select {
		case <-passEnded:
			inFlight--
		case <-changed:
		case <-timeout:
		case <-ctx.Done():
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// migratable returns up to migrateBatch conns that may be claimed now,
// whether any conn may still be passed (pending: those on their way
// included), the earliest end of a busy conn's wait, and a channel closed
// at the next change.
func (s *Server) migratable(now time.Time, busyWait time.Duration) (take []*migratedConn, pending bool, expiry time.Time, changed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		m, ok := c.(*migratedConn)
		if !ok {
			continue
		}
		m.mu.Lock()
		cand := m.pendingLocked()
		busy := cand && !m.busyAt.IsZero()
		if busy {
			end := m.busyAt.Add(busyWait)
			if cand = now.Before(end); cand && (expiry.IsZero() || end.Before(expiry)) {
				expiry = end
			}
		}
		// Claimed (on its way) or waited for: pending, not to take. A conn
		// net/http is not reading from cannot be claimed now.
		claimable := cand && !busy && m.phase == claimNone && m.reading
		m.mu.Unlock()
		if !cand {
			continue
		}
		pending = true
		if claimable && len(take) < migrateBatch {
			take = append(take, m)
		}
	}
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return take, pending, expiry, s.changed
}

// heldConns are claimed conns of one Migrator, to pass in one call.
type heldConns struct {
	mig   Migrator
	conns []*migratedConn
}

// claim stops the pending Reads of take and returns the conns that came
// back empty, grouped by Migrator (one per listener), and how many claims
// ended otherwise (kept here, or found busy).
func (s *Server) claim(ctx context.Context, take []*migratedConn) (held []heldConns, ended int) {
	type pendingClaim struct {
		m       *migratedConn
		verdict <-chan struct{}
	}
	var started []pendingClaim
	for _, m := range take {
		switch v, outcome := m.interrupt(); outcome {
		case claimed:
			started = append(started, pendingClaim{m, v})
		case busyReading:
			// Answered here once its request is in, then passed (waited
			// for NewConnWait at most: see migrate).
			if m.markBusy(time.Now()) {
				ended++
			}
		}
	}
	index := map[Migrator]int{}
	for _, c := range started {
		select {
		case <-c.verdict:
		case <-ctx.Done():
			// The Read comes back at once (its deadline is in the past):
			// wait for it so that no claim is left half done.
			<-c.verdict
		}
		if !c.m.held() {
			ended++ // the client was first: it stays, answered here
			continue
		}
		i, ok := index[c.m.mig]
		if !ok {
			i = len(held)
			index[c.m.mig] = i
			held = append(held, heldConns{mig: c.m.mig})
		}
		held[i].conns = append(held[i].conns, c.m)
	}
	return held, ended
}

// pass hands held conns to their Migrator and ends their claims: passed,
// or kept here (never tried again).
func (s *Server) pass(ctx context.Context, mig Migrator, ms []*migratedConn, rep *Report, repMu *sync.Mutex) {
	conns := make([]net.Conn, len(ms))
	for i, m := range ms {
		conns[i] = m.Conn
	}
	n, err := mig.MigrateConns(ctx, conns)
	if n < 0 || n > len(ms) {
		n = 0
	}
	for i, m := range ms {
		m.finish(i < n)
	}
	repMu.Lock()
	rep.Migrated += n
	if err != nil {
		rep.MigrationFailed += len(ms) - n
	}
	repMu.Unlock()
	if err != nil {
		s.logger().Warn("httpdrain: connections not passed on; drained here", "conns", len(ms)-n, "err", err)
	}
}
