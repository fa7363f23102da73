package ctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/baton-go/baton/internal/contract"
)

// Handler answers one request. It must not block for longer than the
// operation needs; the connection is closed when it returns.
type Handler func(ctx context.Context, req Request) Response

// Server accepts control connections on one listener and answers each with
// Handler after checking that the peer is allowed to steer the service.
type Server struct {
	ln      net.Listener
	handler Handler
	log     *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// requestTimeout bounds how long a client may take to send its request line.
const requestTimeout = 10 * time.Second

// Serve starts answering requests on ln in the background.
func Serve(ln net.Listener, h Handler, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{ln: ln, handler: h, log: log, ctx: ctx, cancel: cancel}
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Warn("control endpoint accept failed", "err", err)
			time.Sleep(50 * time.Millisecond) // e.g. EMFILE: do not spin
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
		}()
	}
}

func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	if err := checkPeer(c); err != nil {
		s.log.Warn("control connection refused", "err", err)
		_ = writeLine(c, Response{Version: Version, Code: CodeForbidden, Error: err.Error()})
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
	var req Request
	if err := readLine(bufio.NewReader(c), &req); err != nil {
		_ = writeLine(c, Response{Version: Version, Code: CodeBadRequest, Error: err.Error()})
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	var resp Response
	var after afterReply
	if req.Version != Version {
		resp = Response{Code: CodeControlProtocol, Error: fmt.Sprintf("%v: client speaks %d, service speaks %d", ErrVersion, req.Version, Version)}
	} else {
		resp = s.handler(context.WithValue(s.ctx, afterKey{}, &after), req)
	}
	resp.Version = Version
	if err := writeLine(c, resp); err != nil {
		s.log.Warn("control response not delivered", "op", req.Op, "err", err)
	}
	for _, f := range after.fs {
		f()
	}
}

type afterKey struct{}

type afterReply struct {
	mu sync.Mutex
	fs []func()
}

// AfterReply makes f run once the answer to the request whose handler got
// ctx has been written (or failed to be), on the connection's goroutine:
// what must not begin before the caller has its answer, such as a stop
// that ends the process. f should not block (start a goroutine for work
// that waits on the server, e.g. Wait). Outside a handler f runs at once.
func AfterReply(ctx context.Context, f func()) {
	a, _ := ctx.Value(afterKey{}).(*afterReply)
	if a == nil {
		f()
		return
	}
	a.mu.Lock()
	a.fs = append(a.fs, f)
	a.mu.Unlock()
}

// Close stops accepting new control connections and returns at once;
// requests already being answered finish (an upgrade that was asked for
// still reports its outcome to its caller). The socket itself is not
// removed: it may live on in the next generation.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() { err = s.ln.Close() })
	return err
}

// Wait blocks until every accepted request has been answered.
func (s *Server) Wait() { s.wg.Wait() }

// CloseWait closes the listener and waits, at most d, until the requests
// accepted so far have been answered; past d the handlers still running
// are canceled. It reports whether every answer was written in time.
func (s *Server) CloseWait(d time.Duration) bool {
	_ = s.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		s.cancel()
		return false
	}
}

// Abort cancels the context of running handlers and closes the listener.
func (s *Server) Abort() {
	s.cancel()
	_ = s.Close()
}

// Do sends one request to the service called name and returns its response.
// ctx bounds the whole exchange (an upgrade may take as long as the new
// generation needs to become ready). Before the request is sent, the
// endpoint's directory is checked as Listen checks it and the server must
// run as our user or root (Windows: as our user, SYSTEM or an elevated
// administrator): an answer from anyone else is never read.
func Do(ctx context.Context, name string, req Request) (Response, error) {
	resp, _, err := DoPeer(ctx, name, req)
	return resp, err
}

// Peer is what the system says about the server that answered.
type Peer struct {
	// PID is, on Windows, the process of the pipe instance that answered;
	// on Linux, the process that made the listening socket (it may be an
	// earlier generation of a library service, since exited); 0 when the
	// system does not say.
	PID int
}

// DoPeer is Do that also returns what the system says about the server.
func DoPeer(ctx context.Context, name string, req Request) (Response, Peer, error) {
	if err := CheckName(name); err != nil {
		return Response{}, Peer{}, err
	}
	c, peer, err := dial(ctx, name)
	if err != nil {
		return Response{}, Peer{}, notSentError{err}
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	req.Version = Version
	if err := writeLine(c, req); err != nil {
		return Response{}, peer, fmt.Errorf("sending control request: %w", err)
	}
	var resp Response
	if err := readLine(bufio.NewReader(c), &resp); err != nil {
		if ctx.Err() != nil {
			return Response{}, peer, fmt.Errorf("waiting for the answer of %q: %w", name, ctx.Err())
		}
		return Response{}, peer, fmt.Errorf("reading control response from %q: %w", name, err)
	}
	if resp.Version != Version {
		return resp, peer, fmt.Errorf("%w: service speaks %d, this client speaks %d", ErrVersion, resp.Version, Version)
	}
	return resp, peer, nil
}

// notSentError marks a failure to reach the service at all: the request was
// never sent, so nothing was done.
type notSentError struct{ error }

func (e notSentError) Unwrap() error { return e.error }

// NotSent reports whether err (from Do) means the request never reached the
// service: nothing was done. Any other error leaves it open whether the
// service acted on the request.
func NotSent(err error) bool {
	var ns notSentError
	return errors.As(err, &ns)
}

// OKResponse builds a successful response carrying v as its result.
func OKResponse(v any) Response { return contract.OKResponse(v) }

// UpgradeOutcome builds the response to an upgrade or a rollback: the
// result, or the error with its code (contract.CodeOf) and, when the new
// generation exited before it was ready, its exit code and the end of its
// stderr.
func UpgradeOutcome(res contract.UpgradeResult, err error) Response {
	return contract.UpgradeResponse(res, err)
}
