package proxy

import (
	"context"
	"errors"
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
}

// TCPProxy forwards each accepted connection to a backend of its Set
// chosen by weight, copying bytes both ways until both sides have
// finished. A client's or backend's half-close (FIN) is passed on as one,
// so request/response protocols that shut down their sending side work.
// Between *net.TCPConn the copy uses splice(2) on Linux.
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
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors and the like: wait and go on,
				// as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
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

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
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
	tried := triedBuf[:0]
	var lastErr error
	for {
		b := p.set.acquire(&tab, "", tried)
		if b == nil {
			p.set.unrouted.Add(1)
			p.failed.Add(1)
			p.log.Warn("proxy: tcp connection refused: no backend", "client", s.client.RemoteAddr().String(), "err", lastErr)
			return
		}
		if len(tried) > 0 {
			tried[len(tried)-1].stats.passedOn()
		}
		start := time.Now()
		bc, err := b.dial(p.ctx, p.opts.DialTimeout)
		if err != nil {
			b.end()
			b.stats.connError()
			tried = append(tried, b)
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
