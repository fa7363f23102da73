package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// flushDelay bounds how long part of an answer of known length waits in
// the proxy's write buffer for more of it (see NewHTTP).
const flushDelay = 5 * time.Millisecond

// Defaults for zero HTTPOptions fields.
const (
	DefaultDialTimeout       = 3 * time.Second
	DefaultBackendIdle       = 30 * time.Second
	DefaultIdlePerBackend    = 512
	DefaultStickyCookie      = "baton_backend"
	DefaultReadHeaderTimeout = 30 * time.Second
	DefaultClientIdle        = 120 * time.Second
)

// HTTPOptions configures an HTTPProxy.
type HTTPOptions struct {
	// DialTimeout bounds each connection attempt to a backend (default 3s).
	DialTimeout time.Duration
	// BackendIdle closes pooled backend connections idle that long
	// (default 30s). Keep it below the apps' own idle timeout, so that the
	// proxy, not the app, closes an idle connection: a non-idempotent
	// request written just as the app closes one cannot be retried.
	BackendIdle time.Duration
	// IdlePerBackend is the number of idle connections kept per backend
	// (default 512).
	IdlePerBackend int

	// Sticky pins a client to the backend that answered its first request
	// with a cookie (StickyCookie, default "baton_backend"), as long as
	// that backend's weight is above 0. The cookie is not passed on to the
	// backends.
	Sticky       bool
	StickyCookie string

	// TrustForwarded keeps the X-Forwarded-For and Forwarded headers a
	// client sent and appends to them; by default they are replaced (baton
	// is the edge, a client could claim any address).
	TrustForwarded bool

	// Used by Serve only: the client side's header read timeout (default
	// 30s) and keep-alive idle timeout (default 120s). ClientIdle also
	// bounds how long a backend may leave a request body unread (each
	// write of it to the backend must end within it).
	ReadHeaderTimeout time.Duration
	ClientIdle        time.Duration

	// Logger receives failed forwards (Warn) and copy errors (Debug);
	// default slog.Default().
	Logger *slog.Logger

	watchDelay time.Duration // the package's tests only; default watchDelay
}

// HTTPProxy forwards each request to a backend of its Set chosen by
// weight. It is an http.Handler; Serve runs it on listeners.
type HTTPProxy struct {
	set  *Set
	opts HTTPOptions
	log  *slog.Logger
	rp   *httputil.ReverseProxy
	srv  *http.Server // serves the connections the fast path hands over

	failed     atomic.Int64
	handedOver atomic.Int64 // connections given to net/http (tests)

	shutting atomic.Bool
	handoff  *handoffListener
	srvOnce  sync.Once
	mu       sync.Mutex
	lns      map[net.Listener]struct{}
	conns    map[*clientConn]struct{} // fast-path client connections
	drained  chan struct{}            // closed when conns empties during Shutdown
}

// NewHTTP returns an HTTPProxy forwarding to the backends of set. A Set
// should serve a single HTTPProxy: the first one to reach a backend owns
// its connection pool (and its options).
func NewHTTP(set *Set, opts HTTPOptions) *HTTPProxy {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.BackendIdle <= 0 {
		opts.BackendIdle = DefaultBackendIdle
	}
	if opts.IdlePerBackend <= 0 {
		opts.IdlePerBackend = DefaultIdlePerBackend
	}
	if opts.StickyCookie == "" {
		opts.StickyCookie = DefaultStickyCookie
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if opts.ClientIdle <= 0 {
		opts.ClientIdle = DefaultClientIdle
	}
	if opts.watchDelay <= 0 {
		opts.watchDelay = watchDelay
	}
	p := &HTTPProxy{set: set, opts: opts, log: opts.Logger, handoff: newHandoffListener(),
		lns: make(map[net.Listener]struct{}), conns: make(map[*clientConn]struct{})}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:   p.rewrite,
		Transport: roundTripper{p},
		// Streams (chunked or text/event-stream answers) are flushed after
		// every write whatever this says. A -1 here would flush an answer
		// of known length after every write too, and its header on its own
		// from a timer goroutine first: one more write (and TCP segment)
		// per request, about a fifth of the proxy's CPU on small answers.
		// Instead header and body leave together, at the latest
		// flushDelay after the app sent them.
		FlushInterval: flushDelay,
		BufferPool:    bufferPool{},
		ErrorHandler:  p.fail,
		ErrorLog:      slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.ClientIdle,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	return p
}

// ServeHTTP forwards r.
func (p *HTTPProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.rp.ServeHTTP(w, r) }

// Serve accepts HTTP/1.1 connections on ln until Shutdown; it may be
// called for several listeners. It returns ErrClosed after Shutdown.
// Connections are served by the fast path (see fast.go) and handed over to
// net/http and ServeHTTP at the first request it does not take; where
// the fast path is not supported (see idle_other.go), by net/http only.
func (p *HTTPProxy) Serve(ln net.Listener) error {
	if !fastPathSupported {
		err := p.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			return ErrClosed
		}
		return err
	}
	p.mu.Lock()
	if p.shutting.Load() {
		p.mu.Unlock()
		_ = ln.Close()
		return ErrClosed
	}
	p.lns[ln] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.lns, ln)
		p.mu.Unlock()
	}()
	var backoff acceptBackoff
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.shutting.Load() {
				return ErrClosed
			}
			if backoff.wait(err, p.log) {
				continue
			}
			return err
		}
		backoff.reset()
		go p.serveConn(c)
	}
}

// Shutdown closes the listeners and idle client connections and waits,
// until ctx is done, for requests in progress (upgraded connections are
// not waited for). Connections finishing a request then are closed.
func (p *HTTPProxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.shutting.Store(true)
	for ln := range p.lns {
		_ = ln.Close()
	}
	for cc := range p.conns {
		if cc.state.CompareAndSwap(connIdle, connClosed) {
			_ = cc.c.Close()
		}
	}
	drained := make(chan struct{})
	if len(p.conns) == 0 {
		close(drained)
	} else {
		p.drained = drained
	}
	p.mu.Unlock()
	_ = p.handoff.Close()
	srvErr := p.srv.Shutdown(ctx)
	select {
	case <-drained:
		return srvErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Failed counts requests the proxy answered itself with 502 (the backend
// gave no answer) or 503 (no backend).
func (p *HTTPProxy) Failed() int64 { return p.failed.Load() }

func (p *HTTPProxy) rewrite(pr *httputil.ProxyRequest) {
	// The backend's transport dials its own socket whatever the URL says;
	// Host stays the client's.
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = "backend"
	if p.opts.TrustForwarded {
		pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	}
	pr.SetXForwarded()
	fwd := forwarded(pr.In)
	if prior := pr.In.Header["Forwarded"]; p.opts.TrustForwarded && len(prior) > 0 {
		fwd = strings.Join(prior, ", ") + ", " + fwd
	}
	pr.Out.Header.Set("Forwarded", fwd)
}

// forwarded is the RFC 7239 element describing r's hop.
func forwarded(r *http.Request) string {
	var b strings.Builder
	b.WriteString(forwardedFor(r.RemoteAddr))
	if r.Host != "" {
		b.WriteString(";host=")
		b.WriteString(quoteIfNeeded(r.Host))
	}
	if r.TLS != nil {
		b.WriteString(";proto=https")
	} else {
		b.WriteString(";proto=http")
	}
	return b.String()
}

// forwardedFor is the for= part of a Forwarded element.
func forwardedFor(remoteAddr string) string {
	ip, _, err := net.SplitHostPort(remoteAddr)
	switch {
	case err != nil || ip == "":
		return "for=unknown"
	case strings.Contains(ip, ":"):
		return `for="[` + ip + `]"`
	}
	return "for=" + ip
}

// quoteIfNeeded returns s as an RFC 7230 token, or quoted-string.
func quoteIfNeeded(s string) string { return string(appendQuoteIfNeeded(nil, []byte(s))) }

// appendQuoteIfNeeded appends s to dst as quoteIfNeeded returns it, with
// no allocation of its own (the fast path does this for every request).
func appendQuoteIfNeeded(dst, s []byte) []byte {
	token := len(s) > 0
	for i := 0; i < len(s) && token; i++ {
		c := s[i]
		token = c > ' ' && c < 0x7f && !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, rune(c))
	}
	if token {
		return append(dst, s...)
	}
	dst = append(dst, '"')
	for _, c := range s {
		if c == '\\' || c == '"' {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return append(dst, '"')
}

// fail answers a request that got no response from any backend.
func (p *HTTPProxy) fail(w http.ResponseWriter, r *http.Request, err error) {
	p.failed.Add(1)
	status := http.StatusBadGateway
	if errors.Is(err, ErrNoBackend) {
		status = http.StatusServiceUnavailable
	}
	if r.Context().Err() != nil {
		p.log.Debug("proxy: client went away", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		p.log.Warn("proxy: request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	w.WriteHeader(status)
}

// transport returns the backend's pooled connections, creating them on
// first use.
func (p *HTTPProxy) transport(b *backend) *http.Transport {
	if tr := b.tr.Load(); tr != nil {
		return tr
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return b.dial(ctx, p.opts.DialTimeout)
		},
		MaxIdleConnsPerHost: p.opts.IdlePerBackend,
		IdleConnTimeout:     p.opts.BackendIdle,
		DisableCompression:  true, // pass encodings through untouched
	}
	if b.tr.CompareAndSwap(nil, tr) {
		return tr
	}
	return b.tr.Load()
}

// bufferPool recycles ReverseProxy's 32 KiB copy buffers (it allocates
// one per request otherwise).
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (bufferPool) Get() []byte { return copyBuffers.Get().(*[32 << 10]byte)[:] }

func (bufferPool) Put(b []byte) {
	if cap(b) == 32<<10 {
		copyBuffers.Put((*[32 << 10]byte)(b[:32<<10]))
	}
}

var errNoRewind = errors.New("proxy: request body partly sent, not replayed")

// replayUnread lets http.Transport resend a request on a fresh connection
// when its reused one failed before a single byte was written (the app
// closed it as idle just then): the Transport reuses the unread body and
// calls GetBody only when some of it was read, which then fails.
func replayUnread() (io.ReadCloser, error) { return nil, errNoRewind }

type roundTripper struct{ p *HTTPProxy }

// RoundTrip sends req to a backend chosen by weight (or by the sticky
// cookie). A request that was not sent (dial error), or an idempotent one
// without body that got no answer, goes to another backend; others fail.
func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	p := rt.p
	want := ""
	if p.opts.Sticky {
		want = takeCookie(req.Header, p.opts.StickyCookie)
	}
	if req.Body != nil && req.GetBody == nil {
		req.GetBody = replayUnread
	}
	tab := p.set.tab.Load()
	var triedBuf [4]*backend
	tried := triedBuf[:0]
	var lastErr error
	for {
		if len(tried) > 0 {
			want = "" // a retry goes by weight
		}
		b := p.set.acquire(&tab, want, tried)
		if b == nil {
			p.set.unrouted.Add(1)
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, ErrNoBackend
		}
		if len(tried) > 0 {
			tried[len(tried)-1].stats.passedOn()
		}
		tr := p.transport(b)
		out := req
		if req.Body != nil {
			// Transport closes the body of a request it could not send;
			// the next attempt needs it open.
			out = new(http.Request)
			*out = *req
			out.Body = &attemptBody{r: req.Body}
		}
		start := time.Now()
		resp, err := tr.RoundTrip(out)
		if err == nil {
			b.stats.answer(time.Since(start), resp.StatusCode >= 500)
			resp.Body = track(req.Context(), resp, b)
			if p.opts.Sticky && b.ID != want {
				c := &http.Cookie{Name: p.opts.StickyCookie, Value: url.QueryEscape(b.ID), Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode}
				resp.Header.Add("Set-Cookie", c.String())
			}
			return resp, nil
		}
		b.end()
		if req.Context().Err() != nil {
			return nil, err // the client went away: not the backend's fault
		}
		b.stats.connError()
		if !errors.Is(err, ErrBackendDial) && (req.Body != nil || !idempotent(req.Method)) {
			return nil, err
		}
		tried = append(tried, b)
		lastErr = err
	}
}

// attemptBody is the request body as one attempt sees it: closing it
// ends that attempt's reads, not the body.
type attemptBody struct {
	r      io.Reader
	closed atomic.Bool
}

var errAttemptClosed = errors.New("proxy: read after the attempt closed the request body")

func (a *attemptBody) Read(p []byte) (int, error) {
	if a.closed.Load() {
		return 0, errAttemptClosed
	}
	return a.r.Read(p)
}

func (a *attemptBody) Close() error {
	a.closed.Store(true)
	return nil
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// takeCookie removes the cookie name from h and returns its value.
func takeCookie(h http.Header, name string) string {
	lines := h["Cookie"]
	if len(lines) == 0 {
		return ""
	}
	val := ""
	kept := lines[:0:0]
	for _, line := range lines {
		parts := strings.Split(line, ";")
		out := parts[:0]
		for _, part := range parts {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			if k == name {
				if u, err := url.QueryUnescape(strings.Trim(v, `"`)); err == nil {
					val = u
				}
				continue
			}
			out = append(out, strings.TrimSpace(part))
		}
		if len(out) > 0 {
			kept = append(kept, strings.Join(out, "; "))
		}
	}
	if len(kept) == 0 {
		h.Del("Cookie")
	} else {
		h["Cookie"] = kept
	}
	return val
}

// track wraps a response body so that closing it ends the backend's
// in-flight request. An upgraded connection (101) keeps its io.Writer, as
// ReverseProxy needs it, and is also closed when the client request ends
// (ReverseProxy leaves it open on some error paths).
func track(ctx context.Context, resp *http.Response, b *backend) io.ReadCloser {
	t := &trackedBody{ReadCloser: resp.Body, b: b}
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		context.AfterFunc(ctx, func() { _ = t.Close() })
		return &trackedConn{trackedBody: t, w: rwc}
	}
	return t
}

type trackedBody struct {
	io.ReadCloser
	b    *backend
	once sync.Once
}

// Close closes the body once and ends the request.
func (t *trackedBody) Close() error {
	var err error
	t.once.Do(func() {
		err = t.ReadCloser.Close()
		t.b.end()
	})
	return err
}

type trackedConn struct {
	*trackedBody
	w io.Writer
}

func (u *trackedConn) Write(p []byte) (int, error) { return u.w.Write(p) }
