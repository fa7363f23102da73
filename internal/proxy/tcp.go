package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// TCPOptions configures a TCPProxy.
type TCPOptions struct {
	// DialTimeout bounds each connection attempt to a backend (default 3s).
	DialTimeout time.Duration
	// Logger receives connections that found no backend (Warn); default
	// slog.Default().
	Logger *slog.Logger
	// Pass, when set, is offered each accepted connection once a backend
	// is chosen by weight, before any dial: it may give the client's
	// socket itself to the backend's process, which then serves the
	// client directly (baton: a library generation, over its supervisor
	// link), instead of the proxy copying bytes. Its result says what
	// the proxy does next (see PassResult). It must neither read from
	// nor write to c, may block (bounded), and is called concurrently.
	// ctx is done when Shutdown gives up waiting: Pass must then return
	// at once (PassLost if the socket may still reach the backend), or a
	// hung backend would hold Shutdown up.
	Pass func(ctx context.Context, backendID string, c net.Conn) PassResult
}

// PassResult is what TCPOptions.Pass did with a connection.
type PassResult int

const (
	// PassRelay: not passed (the backend does not take sockets, or its
	// queue is full): the proxy relays the connection to that backend.
	PassRelay PassResult = iota
	// Passed: the backend's process has the socket and serves it; the
	// proxy closes its own copy. It counts as a connection of that
	// backend (Requests, Passed), its latency the time the pass took.
	Passed
	// PassRefused: the backend must not get it (it is being retired):
	// the proxy tries the other backends by weight, as after a dial
	// failure; the refusal counts (Refused), and is a connection error
	// of that backend only when no backend took the connection.
	PassRefused
	// PassLost: the pass failed half-way and the backend may have the
	// socket: the proxy closes its copy (relaying it could serve it
	// twice) and counts a connection error of that backend.
	PassLost
)

// TCPProxy forwards each accepted connection to a backend of its Set
// chosen by weight, copying bytes both ways until both sides have
// finished. A client's or backend's half-close (FIN) is passed on as one,
// so request/response protocols that shut down their sending side work.
// Between *net.TCPConn the copy uses splice(2) on Linux.
//
// With TCPOptions.Pass the proxy can leave the data path instead: the
// connection's socket goes to the chosen backend's process, and the
// proxy's part ends there. Such a connection is in flight (InFlight,
// Set.WaitIdle) only while it is being passed: once passed, the proxy
// cannot see it end.
type TCPProxy struct {
	set  *Set
	opts TCPOptions
	log  *slog.Logger

	ctx    context.Context // cancelled when Shutdown gives up waiting
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	lns    map[net.Listener]struct{}
	conns  map[*tcpSession]struct{}
	wg     sync.WaitGroup

	failed atomic.Int64
}

type tcpSession struct {
	mu              sync.Mutex
	client, backend net.Conn
}

func (s *tcpSession) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.client.Close()
	if s.backend != nil {
		_ = s.backend.Close()
	}
}

// NewTCP returns a TCPProxy forwarding to the backends of set.
func NewTCP(set *Set, opts TCPOptions) *TCPProxy {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	p := &TCPProxy{
		set: set, opts: opts, log: opts.Logger,
		lns:   make(map[net.Listener]struct{}),
		conns: make(map[*tcpSession]struct{}),
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

// Failed counts client connections closed because no backend could be
// reached.
func (p *TCPProxy) Failed() int64 { return p.failed.Load() }

// Serve accepts connections on ln until Shutdown (it then returns
// ErrClosed) or until ln fails; it may be called for several listeners.
func (p *TCPProxy) Serve(ln net.Listener) error {
	p.mu.Lock()
	if p.closed {
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
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return ErrClosed
			}
			if backoff.wait(err, p.log) {
				continue
			}
			return err
		}
		backoff.reset()
		s := &tcpSession{client: c}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return ErrClosed
		}
		p.conns[s] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.handle(s)
	}
}

// Shutdown stops accepting and waits until every connection has ended
// on its own, or until ctx is done: then it closes the remaining ones and
// returns ctx's error.
func (p *TCPProxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	for ln := range p.lns {
		_ = ln.Close()
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		p.cancel()
		return nil
	case <-ctx.Done():
	}
	p.cancel()
	p.mu.Lock()
	for s := range p.conns {
		s.close()
	}
	p.mu.Unlock()
	<-done
	return ctx.Err()
}

func (p *TCPProxy) handle(s *tcpSession) {
	defer func() {
		s.close()
		p.mu.Lock()
		delete(p.conns, s)
		p.mu.Unlock()
		p.wg.Done()
	}()
	tab := p.set.tab.Load()
	var triedBuf [4]*backend
	tried := triedBuf[:0] // dial failures and refused passes: not again
	var refused []*backend
	dialFailed := false // the last attempt was a dial failure
	var lastErr error
	for {
		b := p.set.acquire(&tab, "", tried)
		if b == nil {
			for _, r := range refused {
				r.stats.connError() // refused, and nobody else took it either
			}
			p.set.unrouted.Add(1)
			p.failed.Add(1)
			p.log.Warn("proxy: tcp connection refused: no backend", "client", s.client.RemoteAddr().String(), "err", lastErr)
			return
		}
		if dialFailed {
			tried[len(tried)-1].stats.passedOn()
		}
		start := time.Now()
		if p.opts.Pass != nil {
			switch p.opts.Pass(p.ctx, b.ID, s.client) {
			case Passed:
				b.stats.passed()
				b.end()
				return // our copy closes; the backend's serves the client
			case PassRefused:
				b.stats.refused()
				b.end()
				tried = append(tried, b)
				refused = append(refused, b)
				dialFailed = false
				// A backend refuses once it is out of the list: look in
				// the current one, not the one this connection started with.
				tab = p.set.tab.Load()
				lastErr = fmt.Errorf("%w: %s refused the connection's socket", ErrNoBackend, b.ID)
				continue
			case PassLost:
				b.stats.connError()
				b.end()
				p.failed.Add(1)
				p.log.Warn("proxy: tcp connection lost while passed to its backend", "client", s.client.RemoteAddr().String(), "backend", b.ID)
				return
			}
		}
		bc, err := b.dial(p.ctx, p.opts.DialTimeout)
		if err != nil {
			b.end()
			b.stats.connError()
			tried = append(tried, b)
			dialFailed = true
			lastErr = err
			continue
		}
		b.stats.answer(time.Since(start), false)
		s.mu.Lock()
		s.backend = bc
		s.mu.Unlock()
		if p.ctx.Err() != nil { // Shutdown gave up while we dialled
			s.close()
		}
		in, out := pipe(s.client, bc)
		b.stats.bytes(in, out)
		b.end()
		return
	}
}

// pipe copies both ways until both directions are finished. A clean end
// of one direction (EOF) half-closes the other side's writing end; an
// error in either closes both connections, which ends the other copy.
func pipe(client, backend net.Conn) (in, out int64) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		in = copyHalf(backend, client)
	}()
	out = copyHalf(client, backend)
	<-done
	return in, out
}

type closeWriter interface{ CloseWrite() error }

func copyHalf(dst, src net.Conn) int64 {
	n, err := io.Copy(dst, src)
	if err == nil {
		if cw, ok := dst.(closeWriter); ok && cw.CloseWrite() == nil {
			return n
		}
	}
	_ = dst.Close()
	_ = src.Close()
	return n
}
