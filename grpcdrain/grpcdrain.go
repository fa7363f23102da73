// Package grpcdrain drains a [grpc.Server] within a deadline and says what
// it had to cut.
//
// [grpc.Server.GracefulStop] is the right drain for a hot upgrade: it
// closes this process's listeners (the socket stays open in the new
// process), ends every connection with grpc-go's two-phase GOAWAY (a first
// GOAWAY that refuses no stream and a PING, the final one after the PING's
// acknowledgement, so that no RPC already on its way is refused), and
// waits for the RPCs in flight. But it waits without bound: one
// server-streaming RPC that never ends (a Watch) keeps the old process
// alive forever. [Drainer.Drain] bounds it by a context: when the context
// is done, [grpc.Server.Stop] cuts what is left, and the [Report] counts
// the RPCs that were still in flight then (unary and streaming, by method).
//
// The counts come from a [stats.Handler] installed with
// [Drainer.ServerOption]:
//
//	d := grpcdrain.New(grpcdrain.Options{})
//	srv := grpc.NewServer(d.ServerOption())
//	// ... serve; when the process must drain:
//	rep, err := d.Drain(ctx, srv)
package grpcdrain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// ErrForced is wrapped by the error [Drainer.Drain] returns when its
// context ended before the RPCs did, so that [grpc.Server.Stop] had to cut
// them. The error also wraps the context's error.
var ErrForced = errors.New("grpcdrain: drain deadline expired, RPCs cut")

// Options tune a Drainer.
type Options struct {
	// Logger receives the drain's start and end. Nil means slog.Default().
	Logger *slog.Logger
}

// Report describes a completed drain.
type Report struct {
	Started, Finished time.Time

	// ConnsAtStart and RPCsAtStart are the connections open and the RPCs
	// in flight when the drain began.
	ConnsAtStart int
	RPCsAtStart  int

	// Forced is true when the context ended first and Stop was called.
	Forced bool
	// CutRPCs is the number of RPCs still in flight when Stop was called;
	// CutStreams how many of them were streaming RPCs (client, server or
	// bidirectional streaming); CutMethods counts them by full method
	// name ("/package.Service/Method"). Zero and nil unless Forced.
	CutRPCs    int
	CutStreams int
	CutMethods map[string]int
}

// Drainer tracks the RPCs and connections of one [grpc.Server] and drains
// it. Create it with [New], install [Drainer.ServerOption] when creating
// the server, and call [Drainer.Drain] to stop it.
type Drainer struct {
	opts Options

	mu        sync.Mutex
	installed bool
	conns     int
	rpcs      map[*rpcInfo]struct{}

	drainOnce sync.Once
	done      chan struct{} // closed when the first Drain returns
	report    Report
	err       error
}

type rpcInfo struct {
	method    string
	streaming bool
}

type rpcKey struct{}

// New returns a Drainer.
func New(opts Options) *Drainer {
	return &Drainer{opts: opts, rpcs: make(map[*rpcInfo]struct{}), done: make(chan struct{})}
}

func (d *Drainer) logger() *slog.Logger {
	if d.opts.Logger != nil {
		return d.opts.Logger
	}
	return slog.Default()
}

// ServerOption returns the option that lets d count the server's
// connections and RPCs (a [stats.Handler]; other stats handlers may be
// installed too). Pass it to [grpc.NewServer].
func (d *Drainer) ServerOption() grpc.ServerOption {
	d.mu.Lock()
	d.installed = true
	d.mu.Unlock()
	return grpc.StatsHandler(statsHandler{d})
}

// InFlight returns the number of RPCs in flight.
func (d *Drainer) InFlight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.rpcs)
}

// Drain stops srv gracefully ([grpc.Server.GracefulStop]) and, if ctx
// ends first, forcibly ([grpc.Server.Stop]). It returns when srv has
// stopped. The error is nil when every RPC finished; otherwise it wraps
// [ErrForced] and ctx.Err(), and the Report counts the RPCs that were cut.
// The Report is valid in every case.
//
// After Stop, Drain does not wait for method handlers that ignore their
// context's cancellation (GracefulStop would, without bound): such a
// handler may still be running when Drain returns, its client already
// told that the RPC failed; a process that exits after the drain ends it.
//
// Drain may be called more than once: later calls wait for the first one
// and return its Report and error (or ctx.Err() if their own ctx ends
// first).
func (d *Drainer) Drain(ctx context.Context, srv *grpc.Server) (Report, error) {
	first := false
	d.drainOnce.Do(func() { first = true })
	if !first {
		select {
		case <-d.done:
			return d.report, d.err
		case <-ctx.Done():
			return Report{}, ctx.Err()
		}
	}

	log := d.logger()
	d.mu.Lock()
	rep := Report{Started: time.Now(), ConnsAtStart: d.conns, RPCsAtStart: len(d.rpcs)}
	installed := d.installed
	d.mu.Unlock()
	if !installed {
		log.Warn("grpcdrain: ServerOption was not installed: RPCs are not counted")
	}
	log.Info("grpcdrain: drain started", "conns", rep.ConnsAtStart, "rpcs", rep.RPCsAtStart)

	stopped := make(chan struct{})
	go func() {
		// GracefulStop returns once every handler has returned, even
		// after Stop: this goroutine may outlive Drain (see above).
		srv.GracefulStop()
		close(stopped)
	}()
	var err error
	select {
	case <-stopped:
	case <-ctx.Done():
		// What is in flight now is what Stop cuts (an RPC that ends
		// between here and Stop is counted too).
		d.mu.Lock()
		rep.Forced = true
		rep.CutRPCs = len(d.rpcs)
		rep.CutMethods = map[string]int{}
		for r := range d.rpcs {
			rep.CutMethods[r.method]++
			if r.streaming {
				rep.CutStreams++
			}
		}
		d.mu.Unlock()
		// Stop closes every connection and cancels every RPC's context;
		// it does not wait for the handlers.
		srv.Stop()
		err = fmt.Errorf("%w (%d RPCs, %d streaming: %s): %w", ErrForced, rep.CutRPCs, rep.CutStreams, methods(rep.CutMethods), ctx.Err())
	}
	rep.Finished = time.Now()
	if err != nil {
		log.Warn("grpcdrain: drain deadline expired", "cut_rpcs", rep.CutRPCs, "cut_streams", rep.CutStreams,
			"methods", methods(rep.CutMethods), "duration", rep.Finished.Sub(rep.Started))
	} else {
		log.Info("grpcdrain: drain finished", "duration", rep.Finished.Sub(rep.Started), "rpcs_at_start", rep.RPCsAtStart)
	}
	d.report, d.err = rep, err
	close(d.done)
	return rep, err
}

func methods(m map[string]int) string {
	names := make([]string, 0, len(m))
	for name, n := range m {
		names = append(names, fmt.Sprintf("%s=%d", name, n))
	}
	sort.Strings(names)
	return fmt.Sprint(names)
}

// statsHandler is the server's stats.Handler: an RPC is in flight from its
// Begin to its End, a connection from its ConnBegin to its ConnEnd.
type statsHandler struct{ d *Drainer }

func (h statsHandler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, rpcKey{}, &rpcInfo{method: info.FullMethodName})
}

func (h statsHandler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	r, _ := ctx.Value(rpcKey{}).(*rpcInfo)
	if r == nil {
		return
	}
	switch s := s.(type) {
	case *stats.Begin:
		h.d.mu.Lock()
		r.streaming = s.IsClientStream || s.IsServerStream
		h.d.rpcs[r] = struct{}{}
		h.d.mu.Unlock()
	case *stats.End:
		h.d.mu.Lock()
		delete(h.d.rpcs, r)
		h.d.mu.Unlock()
	}
}

func (h statsHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (h statsHandler) HandleConn(_ context.Context, s stats.ConnStats) {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	switch s.(type) {
	case *stats.ConnBegin:
		h.d.conns++
	case *stats.ConnEnd:
		h.d.conns--
	}
}
