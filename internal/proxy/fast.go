package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The fast path: Serve runs its own HTTP/1.1 loop on each client
// connection, one goroutine per connection, and forwards each request on a
// pooled backend connection in that goroutine (no per-request goroutines,
// no hand-offs between them). It takes the common requests: HTTP/1.1,
// origin-form target, no body or a Content-Length body of at most
// fastBodyMax, Connection at most "keep-alive" or "close", no Upgrade,
// Expect, TE, Trailer or Transfer-Encoding, a head that fits the read
// buffer and that the parser finds plainly valid. Any other request, and
// every later one on its connection, is served by net/http and
// httputil.ReverseProxy (ServeHTTP): the connection is handed over with
// the request's bytes still unread, so net/http sees it from its start
// (and answers malformed requests itself, as before).

const (
	clientReadBuf  = 16 << 10 // also the largest request head the fast path takes
	clientWriteBuf = 8 << 10
	backendReadBuf = 16 << 10 // also the longest answer header line
	fastBodyMax    = 1 << 20  // larger uploads go to net/http (the connection is handed over)
	maxRespHead    = 1 << 20  // the largest answer head (and trailer section) the fast path accepts

	maxInformational = 8 // 1xx answers passed on before the final one

	// keptHeadBuf: an answer head buffer grown larger than this (heads
	// may take up to maxRespHead) is dropped after its answer rather than
	// kept with the client connection for its whole life.
	keptHeadBuf = 16 << 10

	// watchDelay: a request whose answer takes longer starts watching its
	// client, so that a client that leaves ends the backend request (as
	// net/http's server cancels the request context, at once). Quicker
	// answers cost no more than a timer, also on a loaded machine where
	// many answers take a few milliseconds.
	watchDelay = 100 * time.Millisecond
)

// Client connection states, for Shutdown.
const (
	connIdle   int32 = iota // waiting for a request (or new)
	connActive              // a request is being read, forwarded or answered
	connClosed              // closed by Shutdown while idle
)

var (
	errBadAnswer    = errors.New("proxy: malformed answer from the backend")
	errClientBody   = errors.New("proxy: reading the request body from the client")
	errClientWrite  = errors.New("proxy: writing the answer to the client")
	errAnswerAbort  = errors.New("proxy: the backend's answer ended early")
	errClientGone   = errors.New("proxy: the client left before the answer")
	errStaleConn    = errors.New("proxy: the pooled backend connection was closed or written to while idle")
	aLongTimeAgo    = time.Unix(1, 0)
	crlf            = []byte("\r\n")
	chunkedTE       = []byte("Transfer-Encoding: chunked\r\n")
	connCloseHeader = []byte("Connection: close\r\n")
)

// clientConn is one client connection served by the fast path.
type clientConn struct {
	p     *HTTPProxy
	c     net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer // writes to cw
	cw    countedConn
	state atomic.Int32

	xff    string // the client's IP as X-Forwarded-For names it; "" if unknown
	fwdFor string // the for= part of its Forwarded element

	out     []byte // the request head as sent to backends
	resp    []byte // the answer head as sent to the client
	names   []byte // the request's method and target, for logs
	bufs    [2][]byte
	dropped []string // header names a backend's Connection header lists (rare)

	bodyLeft int64 // request body bytes not yet read from the client

	// Watching the client while a backend prepares the answer (see
	// startWatch): watchTimer runs watch after watchDelay.
	watchTimer *time.Timer
	watchDone  chan struct{}
	watching   atomic.Pointer[backendConn] // the backend connection to close if the client leaves
	left       atomic.Bool                 // the client left while watched
	watchMu    sync.Mutex
	watchStop  bool // set by stopWatch: watch must not clear the read deadline any more

	// idleUntil is the read deadline setIdleDeadline set last; zero when
	// setReadDeadline (or the watch, see stopWatch) changed it since.
	idleUntil time.Time
}

// reqInfo is what forwarding needs to know about a parsed request.
type reqInfo struct {
	method, target []byte // for logs only; in clientConn.names
	headLen        int
	contentLength  int64
	idempotent     bool
	isHead         bool
	close          bool   // the client asked to close after the answer
	want           string // sticky cookie's backend
}

// serveConn runs the fast path on c until it closes, fails, or is handed
// over to net/http.
func (p *HTTPProxy) serveConn(c net.Conn) {
	cc := &clientConn{p: p, c: c, br: bufio.NewReaderSize(sockReader(c), clientReadBuf)}
	if !p.addConn(cc) {
		_ = c.Close()
		return
	}
	handed := false
	defer func() {
		p.removeConn(cc)
		if !handed {
			_ = c.Close()
		}
	}()
	if !peekable(c) { // the client could not be watched: net/http serves it
		handed = true
		p.handOver(cc)
		return
	}
	if ip, _, err := net.SplitHostPort(c.RemoteAddr().String()); err == nil {
		cc.xff = ip
	}
	cc.fwdFor = forwardedFor(c.RemoteAddr().String())
	first := true
	for {
		wait := p.opts.ClientIdle
		if first {
			wait = p.opts.ReadHeaderTimeout
		}
		cc.setIdleDeadline(wait)
		if _, err := cc.br.Peek(1); err != nil {
			return
		}
		if !cc.state.CompareAndSwap(connIdle, connActive) {
			return // Shutdown closed it
		}
		head, err := cc.readHead(first)
		if err != nil {
			return
		}
		var ri reqInfo
		if head == nil || !cc.parseRequest(head, &ri) {
			handed = true
			p.handOver(cc)
			return
		}
		if cc.bw == nil {
			cc.cw.w = sockWriter(c)
			cc.bw = bufio.NewWriterSize(&cc.cw, clientWriteBuf)
		}
		_, _ = cc.br.Discard(ri.headLen)
		cc.bodyLeft = ri.contentLength
		if !cc.forward(&ri) || cc.bodyLeft != 0 {
			return
		}
		if cap(cc.resp) > keptHeadBuf {
			cc.resp = nil
		}
		if cap(cc.names) > keptHeadBuf {
			cc.names = nil
		}
		cc.state.Store(connIdle)
		if p.shutting.Load() && cc.state.CompareAndSwap(connIdle, connClosed) {
			return
		}
		first = false
	}
}

// setIdleDeadline makes the client connection's read deadline wait from
// now, for the next request's first byte. A deadline is a timer in the
// runtime, and a busy client would move it by a few µs per request: it
// is kept when it is less than wait/64 short of now+wait (an idle client
// is closed after 63/64 of wait at the soonest), a timer operation saved
// on most requests.
func (cc *clientConn) setIdleDeadline(wait time.Duration) {
	until := time.Now().Add(wait)
	if d := until.Sub(cc.idleUntil); cc.idleUntil.IsZero() || d < 0 || d > wait/64 {
		_ = cc.c.SetReadDeadline(until)
		cc.idleUntil = until
	}
}

// setReadDeadline sets the client connection's read deadline for
// anything but the wait for a next request, from the connection's own
// goroutine: setIdleDeadline then sets its deadline again in full.
func (cc *clientConn) setReadDeadline(t time.Time) {
	_ = cc.c.SetReadDeadline(t)
	cc.idleUntil = time.Time{}
}

// readHead returns the request head (up to and including its empty line)
// from the read buffer without consuming it; nil when it does not fit or
// is not plainly CRLF-delimited. The head's end is found with bare LFs
// too (RFC 9112 allows a recipient to accept them, net/http does): such a
// head goes to net/http, which reads it or answers 400, rather than wait
// for a CRLF CRLF that never comes.
func (cc *clientConn) readHead(first bool) ([]byte, error) {
	deadlineSet := first
	for {
		buf, _ := cc.br.Peek(cc.br.Buffered())
		if end := headLen(buf); end > 0 {
			head := buf[:end]
			lf := bytes.Count(head, []byte{'\n'})
			if bytes.Count(head, crlf) != lf || bytes.Count(head, []byte{'\r'}) != lf {
				return nil, nil
			}
			return head, nil
		}
		if len(buf) >= cc.br.Size() {
			return nil, nil
		}
		if !deadlineSet { // the header read timeout runs from its first byte
			cc.setReadDeadline(time.Now().Add(cc.p.opts.ReadHeaderTimeout))
			deadlineSet = true
		}
		if _, err := cc.br.Peek(len(buf) + 1); err != nil {
			return nil, err
		}
	}
}

// headLen is the length of the head at the start of buf, up to its empty
// line ended by CRLF or a bare LF; 0 when buf does not hold all of it.
func headLen(buf []byte) int {
	end := 0
	if i := bytes.Index(buf, []byte("\n\r\n")); i >= 0 {
		end = i + 3
	}
	if i := bytes.Index(buf, []byte("\n\n")); i >= 0 && (end == 0 || i+2 < end) {
		end = i + 2
	}
	return end
}

// forward sends the request to a backend chosen by weight (or the sticky
// cookie) and relays its answer, with the retry rules of RoundTrip. It
// reports whether the client connection may serve another request.
func (cc *clientConn) forward(ri *reqInfo) bool {
	p := cc.p
	tab := p.set.tab.Load()
	var triedBuf [4]*backend
	tried := triedBuf[:0]
	want := ri.want
	var lastErr error
	for {
		if len(tried) > 0 {
			want = "" // a retry goes by weight
		}
		b := p.set.acquire(&tab, want, tried)
		if b == nil {
			p.set.unrouted.Add(1)
			if lastErr == nil {
				lastErr = ErrNoBackend
			}
			return cc.fail(ri, lastErr)
		}
		if len(tried) > 0 {
			tried[len(tried)-1].stats.passedOn()
		}
		keep, err := cc.exchange(b, ri, want)
		if err == nil {
			return keep
		}
		if clientSide(err) {
			p.failed.Add(1)
			p.log.Debug("proxy: client went away", "method", string(ri.method), "path", string(ri.target), "err", err)
			return false
		}
		if !errors.Is(err, ErrBackendDial) && (ri.contentLength != 0 || !ri.idempotent) {
			return cc.fail(ri, err)
		}
		tried = append(tried, b)
		lastErr = err
	}
}

// exchange sends the request to b and relays the answer. It returns an
// error, with b's request ended and counted as a connection error, when
// no answer came, or a client-side error (see clientSide: not counted,
// not retried) when the client left or failed; a connection taken from the pool that fails before any
// answer byte is replaced by a new one on the same backend when the
// request can be sent again (idempotent without body, or not one byte
// written), as http.Transport does.
func (cc *clientConn) exchange(b *backend, ri *reqInfo, want string) (keep bool, err error) {
	p := cc.p
	pool := p.pool(b)
	start := time.Now()
	replayable := ri.contentLength == 0 && ri.idempotent
	fresh := false
	for {
		var bc *backendConn
		if !fresh {
			bc = pool.get()
		}
		reused := bc != nil
		if bc == nil {
			c, err := b.dial(context.Background(), p.opts.DialTimeout)
			if err != nil {
				b.end()
				b.stats.connError()
				return false, err
			}
			bc = newBackendConn(c)
		}
		wrote, watched, err := cc.send(bc, ri, reused)
		var rh respHead
		if err == nil {
			err = cc.readAnswerHead(bc, ri, &rh)
		}
		if watched && cc.stopWatch() {
			if err == nil {
				err = errClientGone
			} else {
				err = fmt.Errorf("%w: %w", errClientGone, err)
			}
		}
		if err != nil {
			bc.close()
			if clientSide(err) {
				b.end()
				return false, err
			}
			if errors.Is(err, errStaleConn) {
				continue // nothing was sent: another pooled connection, or a new one
			}
			if reused && !bc.received && (replayable || !wrote) {
				fresh = true
				continue
			}
			b.end()
			b.stats.connError()
			return false, err
		}
		b.stats.answer(time.Since(start), rh.code >= 500)
		keep, reuse, gone := cc.relay(bc, ri, &rh, b, want)
		if reuse && bc.br.Buffered() == 0 {
			pool.put(bc) // before end: the last end of a removed backend closes the pool
		} else {
			bc.close()
		}
		b.end()
		if gone != nil {
			return false, gone
		}
		// The end of the answer leaves after the request ended, as with
		// net/http: a client that has its answer finds it no longer in
		// flight.
		if err := cc.bw.Flush(); err != nil {
			p.log.Debug("proxy: answer not relayed to the end", "method", string(ri.method), "path", string(ri.target), "err", err)
			return false, nil
		}
		return keep, nil
	}
}

// clientSide reports whether err is the client's doing (it left, or its
// connection failed while reading its body or writing its answer): not
// the backend's fault, so neither counted against it nor tried on
// another backend (a client resetting its connections must not make a
// healthy backend look failing, nor reach every backend with a request).
func clientSide(err error) bool {
	return errors.Is(err, errClientBody) || errors.Is(err, errClientGone) || errors.Is(err, errClientWrite)
}

// startWatch arranges for the client to be watched while bc's answer is
// awaited, if it takes longer than watchDelay. unread is how much of the
// read buffer is the current request's (its body, not yet sent). Not
// when the client has sent more already (a pipelined request): it is
// there, and its bytes must stay unread. It reports whether stopWatch
// must be called.
func (cc *clientConn) startWatch(bc *backendConn, unread int) bool {
	if cc.br.Buffered() > unread {
		return false
	}
	if cc.watchTimer == nil {
		cc.watchDone = make(chan struct{}, 1)
		cc.watchTimer = time.AfterFunc(time.Hour, cc.watch)
		cc.watchTimer.Stop()
	}
	cc.watchStop = false
	cc.left.Store(false)
	cc.watching.Store(bc)
	cc.watchTimer.Reset(cc.p.opts.watchDelay)
	return true
}

// watch waits (in the timer's goroutine) until the client connection is
// readable: its end means the client left, and the backend connection is
// closed, which ends the wait for the answer. Bytes mean the client is
// there; stopWatch ends the wait with a read deadline in the past.
func (cc *clientConn) watch() {
	defer func() { cc.watchDone <- struct{}{} }()
	cc.watchMu.Lock()
	if cc.watchStop {
		cc.watchMu.Unlock()
		return
	}
	_ = cc.c.SetReadDeadline(time.Time{}) // the header or idle timeout set before the request
	cc.watchMu.Unlock()
	if clientGone(cc.c) {
		cc.left.Store(true)
		if bc := cc.watching.Load(); bc != nil {
			bc.close()
		}
	}
}

// stopWatch ends the watch started by startWatch and reports whether the
// client left meanwhile. The client connection has no read deadline
// afterwards if the watch ran (serveConn sets one before the next head).
func (cc *clientConn) stopWatch() (left bool) {
	if cc.watchTimer.Stop() {
		return false // it never ran
	}
	cc.watchMu.Lock()
	cc.watchStop = true
	_ = cc.c.SetReadDeadline(aLongTimeAgo)
	cc.watchMu.Unlock()
	<-cc.watchDone
	cc.setReadDeadline(time.Time{})
	cc.watching.Store(nil)
	return cc.left.Load()
}

// send writes the request head and body to bc and starts watching the
// client (startWatch: watched says whether stopWatch must be called).
// wrote says whether any of it may have reached the backend.
//
// A request that is all in the read buffer goes out in one write made by
// bc.writeAwaitingAnswer, which also waits for the answer's first bytes.
// A reused connection is peeked first (errStaleConn, nothing sent, when
// the backend closed it or wrote to it while it was idle): for the
// awaited write in the same readiness wait, so that a backend's end
// arriving between the peek and the write still wakes the wait.
// A body's writes each have ClientIdle to finish: a backend that stops
// reading it (an app answering early, or stuck) must not hold the
// request, its backend connection and the client forever.
func (cc *clientConn) send(bc *backendConn, ri *reqInfo, reused bool) (wrote, watched bool, err error) {
	hasBody := cc.bodyLeft > 0
	if hasBody {
		_ = bc.c.SetWriteDeadline(time.Now().Add(cc.p.opts.ClientIdle))
		defer func() { _ = bc.c.SetWriteDeadline(time.Time{}) }()
	}
	part, _ := cc.br.Peek(int(min(cc.bodyLeft, int64(cc.br.Buffered()))))
	if int64(len(part)) == cc.bodyLeft {
		req := cc.out
		if len(part) > 0 {
			req = append(req, part...)
			cc.out = req[:len(cc.out)] // the head, in the grown buffer
		}
		watched = cc.startWatch(bc, len(part))
		n, err := bc.writeAwaitingAnswer(req, reused)
		if errors.Is(err, errStaleConn) {
			return false, watched, err
		}
		if err == nil && n < len(req) {
			var more int
			more, err = bc.c.Write(req[n:])
			n += more
		}
		if err != nil {
			return n > 0, watched, fmt.Errorf("proxy: sending the request: %w", err)
		}
		_, _ = cc.br.Discard(len(part))
		cc.bodyLeft = 0
		return true, watched, nil
	}
	if reused && !idleConnUsable(bc.c) {
		return false, false, errStaleConn
	}
	cc.bufs = [2][]byte{cc.out, part}
	bufs := net.Buffers(cc.bufs[:])
	n, err := bufs.WriteTo(bc.c)
	if err != nil {
		return n > 0, false, fmt.Errorf("proxy: sending the request: %w", err)
	}
	_, _ = cc.br.Discard(len(part))
	cc.bodyLeft -= int64(len(part))
	cc.setReadDeadline(time.Time{}) // no body read timeout, as net/http's
	for cc.bodyLeft > 0 {
		if _, err := cc.br.Peek(1); err != nil {
			return true, false, fmt.Errorf("%w: %w", errClientBody, err)
		}
		part, _ := cc.br.Peek(int(min(cc.bodyLeft, int64(cc.br.Buffered()))))
		_ = bc.c.SetWriteDeadline(time.Now().Add(cc.p.opts.ClientIdle))
		w, err := bc.c.Write(part)
		_, _ = cc.br.Discard(w)
		cc.bodyLeft -= int64(w)
		if err != nil {
			return true, false, fmt.Errorf("proxy: sending the request body: %w", err)
		}
	}
	return true, cc.startWatch(bc, 0), nil
}

// fail answers the request itself (502, or 503 without backend), like
// HTTPProxy.fail, and reports whether the connection may go on.
func (cc *clientConn) fail(ri *reqInfo, err error) bool {
	p := cc.p
	p.failed.Add(1)
	status := http.StatusBadGateway
	if errors.Is(err, ErrNoBackend) {
		status = http.StatusServiceUnavailable
	}
	p.log.Warn("proxy: request failed", "method", string(ri.method), "path", string(ri.target), "status", status, "err", err)
	closing := ri.close || cc.bodyLeft != 0 || p.shutting.Load()
	w := cc.bw
	_, _ = fmt.Fprintf(w, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	writeDate(w)
	if closing {
		_, _ = w.Write(connCloseHeader)
	}
	_, _ = w.WriteString("Content-Length: 0\r\n\r\n")
	return w.Flush() == nil && !closing
}

func writeDate(w *bufio.Writer) {
	var buf [64]byte
	b := append(buf[:0], "Date: "...)
	b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
	_, _ = w.Write(append(b, '\r', '\n'))
}

// relay writes the answer to the client: its head, then its body as it
// comes (the client's buffer is flushed whenever the backend has nothing
// more buffered, so streams are not held back and small answers leave in
// one write, flushed by the caller). It reports whether the client
// connection may go on and the backend connection may be reused, and
// gone (errClientGone) when the client left while the body was awaited.
func (cc *clientConn) relay(bc *backendConn, ri *reqInfo, rh *respHead, b *backend, want string) (keep, reuse bool, gone error) {
	p := cc.p
	w := cc.bw
	sent := cc.cw.n // before this answer
	closing := ri.close || p.shutting.Load()
	bodyless := ri.isHead || rh.code == http.StatusNoContent || rh.code == http.StatusNotModified
	delimited := !bodyless && !rh.chunked && rh.contentLength < 0 // ends when the backend closes
	_, _ = w.Write(cc.resp)
	if !bodyless && (rh.chunked || delimited) {
		_, _ = w.Write(chunkedTE)
	}
	if p.opts.Sticky && b.ID != want {
		c := &http.Cookie{Name: p.opts.StickyCookie, Value: url.QueryEscape(b.ID), Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode}
		_, _ = w.WriteString("Set-Cookie: " + c.String() + "\r\n")
	}
	if !rh.hasDate {
		writeDate(w)
	}
	if closing {
		_, _ = w.Write(connCloseHeader)
	}
	if !bodyless && !rh.hasType && !rh.hasEncoding && rh.contentLength != 0 {
		cc.sniff(bc, rh)
	}
	_, _ = w.Write(crlf)

	var err error
	switch {
	case bodyless:
	case rh.chunked:
		err = cc.relayChunked(bc)
	case delimited:
		err = cc.relayUntilEOF(bc)
	default:
		err = cc.relayN(bc, rh.contentLength)
	}
	if err != nil {
		w.Reset(&cc.cw) // what is left of it is not sent
		if errors.Is(err, errClientGone) {
			return false, false, err
		}
		if sent == cc.cw.n && !errors.Is(err, errClientWrite) {
			// Nothing of it reached the client: answer 502 instead.
			return cc.fail(ri, err), false, nil
		}
		p.log.Debug("proxy: answer not relayed to the end", "method", string(ri.method), "path", string(ri.target), "err", err)
		return false, false, nil
	}
	// An answer without body by rule whose head announces one: the
	// backend may think it owes a body, and its bytes coming late could
	// race the check of a pooled connection.
	announced := ri.isHead || bodyless && (rh.contentLength > 0 || rh.chunked)
	return !closing, !delimited && !rh.close && !rh.doubtful && !announced, nil
}

// countedConn counts the bytes written to the client connection (whether
// any of an answer left the proxy yet).
type countedConn struct {
	w io.Writer // the client connection's sockWriter
	n int64
}

func (w *countedConn) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n += int64(n)
	return n, err
}

// sniff adds the Content-Type net/http's server would add to an answer
// without one, from the body bytes the backend has already sent.
func (cc *clientConn) sniff(bc *backendConn, rh *respHead) {
	data, _ := bc.br.Peek(bc.br.Buffered())
	if rh.chunked {
		line, rest, ok := bytes.Cut(data, crlf)
		size, valid := chunkSize(line)
		if !ok || !valid {
			return
		}
		data = rest[:min(int64(len(rest)), size)]
	} else if rh.contentLength >= 0 {
		data = data[:min(int64(len(data)), rh.contentLength)]
	}
	if len(data) == 0 {
		return
	}
	_, _ = cc.bw.WriteString("Content-Type: " + http.DetectContentType(data[:min(len(data), 512)]) + "\r\n")
}

// more makes sure bc has buffered bytes, flushing the client's buffer
// first if the read would have to wait.
func (cc *clientConn) more(bc *backendConn) error {
	if bc.br.Buffered() > 0 {
		return nil
	}
	if cc.bw.Buffered() > 0 {
		if err := cc.bw.Flush(); err != nil {
			return fmt.Errorf("%w: %w", errClientWrite, err)
		}
	}
	if err := cc.fill(bc); err != nil {
		if errors.Is(err, errClientGone) {
			return err
		}
		return fmt.Errorf("%w: %w", errAnswerAbort, err)
	}
	return nil
}

// fill waits for more of the answer from bc, its buffer being empty,
// and watches the client meanwhile as the wait for the head does: a
// stream (server-sent events, a long poll) whose client left ends then,
// not when the app writes again (it would hold its backend connection
// and stay in flight, keeping a retired generation from draining).
func (cc *clientConn) fill(bc *backendConn) error {
	watched := cc.startWatch(bc, 0)
	_, err := bc.br.Peek(1)
	if watched && cc.stopWatch() {
		if err == nil { // bc was closed as the bytes came
			return errClientGone
		}
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	return err
}

func (cc *clientConn) write(p []byte) error {
	if _, err := cc.bw.Write(p); err != nil {
		return fmt.Errorf("%w: %w", errClientWrite, err)
	}
	return nil
}

// relayN copies n body bytes.
func (cc *clientConn) relayN(bc *backendConn, n int64) error {
	for n > 0 {
		if err := cc.more(bc); err != nil {
			return err
		}
		part, _ := bc.br.Peek(int(min(n, int64(bc.br.Buffered()))))
		if err := cc.write(part); err != nil {
			return err
		}
		_, _ = bc.br.Discard(len(part))
		n -= int64(len(part))
	}
	return nil
}

// relayChunked relays a chunked body chunk by chunk, each one checked:
// its size line (passed on without extensions), its data, the CRLF after
// it, and the trailer section.
func (cc *clientConn) relayChunked(bc *backendConn) error {
	var sizeLine [20]byte
	for {
		if err := cc.more(bc); err != nil {
			return err
		}
		line, err := bc.readLine()
		if err != nil {
			return fmt.Errorf("%w: chunk size: %w", errAnswerAbort, err)
		}
		size, ok := chunkSize(line)
		if !ok {
			return fmt.Errorf("%w: chunk size line %q", errBadAnswer, line)
		}
		if err := cc.write(append(strconv.AppendInt(sizeLine[:0], size, 16), '\r', '\n')); err != nil {
			return err
		}
		if size == 0 {
			return cc.relayTrailer(bc)
		}
		if err := cc.relayN(bc, size); err != nil {
			return err
		}
		if err := cc.more(bc); err != nil {
			return err
		}
		end, err := bc.br.Peek(2)
		if err != nil {
			return fmt.Errorf("%w: after a chunk: %w", errAnswerAbort, err)
		}
		if !bytes.Equal(end, crlf) {
			return fmt.Errorf("%w: chunk data not followed by CRLF", errBadAnswer)
		}
		_, _ = bc.br.Discard(2)
		if err := cc.write(crlf); err != nil {
			return err
		}
	}
}

// relayTrailer relays the trailer section up to its empty line, each
// field checked as a header field is.
func (cc *clientConn) relayTrailer(bc *backendConn) error {
	total := 0
	for {
		if err := cc.more(bc); err != nil {
			return err
		}
		line, err := bc.readLine()
		if err != nil {
			return fmt.Errorf("%w: trailer: %w", errAnswerAbort, err)
		}
		if len(line) == 0 {
			return cc.write(crlf)
		}
		if total += len(line); total > maxRespHead {
			return fmt.Errorf("%w: trailer over %d bytes", errBadAnswer, maxRespHead)
		}
		name, value, ok := validHeaderLine(line)
		if !ok {
			return fmt.Errorf("%w: trailer line %q", errBadAnswer, line)
		}
		if err := cc.write(name); err != nil {
			return err
		}
		if err := cc.write([]byte(": ")); err != nil {
			return err
		}
		if err := cc.write(value); err != nil {
			return err
		}
		if err := cc.write(crlf); err != nil {
			return err
		}
	}
}

// relayUntilEOF sends a body that ends when the backend closes as chunks.
func (cc *clientConn) relayUntilEOF(bc *backendConn) error {
	for {
		if bc.br.Buffered() == 0 {
			if cc.bw.Buffered() > 0 {
				if err := cc.bw.Flush(); err != nil {
					return fmt.Errorf("%w: %w", errClientWrite, err)
				}
			}
			if err := cc.fill(bc); err == io.EOF {
				return cc.write([]byte("0\r\n\r\n"))
			} else if errors.Is(err, errClientGone) {
				return err
			} else if err != nil {
				return fmt.Errorf("%w: %w", errAnswerAbort, err)
			}
		}
		part, _ := bc.br.Peek(bc.br.Buffered())
		var size [20]byte
		if err := cc.write(append(strconv.AppendInt(size[:0], int64(len(part)), 16), '\r', '\n')); err != nil {
			return err
		}
		if err := cc.write(part); err != nil {
			return err
		}
		if err := cc.write(crlf); err != nil {
			return err
		}
		_, _ = bc.br.Discard(len(part))
	}
}

// chunkSize parses a chunk-size line (without its CRLF): hex digits, then
// optional white space and extensions without control characters.
func chunkSize(line []byte) (int64, bool) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		if !validValue(line[i+1:]) {
			return 0, false
		}
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	return n, true
}

// Connection tracking for Shutdown and the hand-over to net/http.

func (p *HTTPProxy) addConn(cc *clientConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shutting.Load() {
		return false
	}
	p.conns[cc] = struct{}{}
	return true
}

func (p *HTTPProxy) removeConn(cc *clientConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, cc)
	if len(p.conns) == 0 && p.drained != nil {
		close(p.drained)
		p.drained = nil
	}
}

// handOver gives the connection to net/http (p.srv), its unread bytes
// first.
func (p *HTTPProxy) handOver(cc *clientConn) {
	p.handedOver.Add(1)
	_ = cc.c.SetReadDeadline(time.Time{})
	var c net.Conn = cc.c
	if n := cc.br.Buffered(); n > 0 {
		buf, _ := cc.br.Peek(n)
		c = &replayConn{Conn: cc.c, r: io.MultiReader(bytes.NewReader(bytes.Clone(buf)), cc.c)}
	}
	p.srvOnce.Do(func() {
		go func() { _ = p.srv.Serve(p.handoff) }()
	})
	select {
	case p.handoff.ch <- c:
	case <-p.handoff.done:
		_ = c.Close()
	}
}

// replayConn reads bytes already taken from the connection first.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// handoffListener feeds handed-over connections to net/http's server.
type handoffListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoffListener() *handoffListener {
	return &handoffListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return handoffAddr{} }

type handoffAddr struct{}

func (handoffAddr) Network() string { return "handoff" }
func (handoffAddr) String() string  { return "handoff" }
