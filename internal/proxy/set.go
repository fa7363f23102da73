package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned (wrapped) by this package; test them with errors.Is.
var (
	// ErrBadBackend: SetBackends was given an invalid backend list.
	ErrBadBackend = errors.New("proxy: invalid backend")
	// ErrNoBackend: no backend with a weight above 0 could take the
	// request or connection.
	ErrNoBackend = errors.New("proxy: no backend available")
	// ErrBackendDial: connecting to a backend failed; nothing was sent.
	ErrBackendDial = errors.New("proxy: backend dial failed")
	// ErrClosed: Serve was called after, or returned because of, Shutdown.
	ErrClosed = errors.New("proxy: closed")
)

// MaxWeight bounds a single backend's weight.
const MaxWeight = 1_000_000

// DefaultWindow is the span of the sliding window of [BackendStats.Window]
// when [SetOptions.Window] is zero.
const DefaultWindow = 30 * time.Second

// Backend is one place traffic may go: in baton, one generation of the
// app on its private socket.
type Backend struct {
	ID      string // unique in a Set; in baton, the generation (e.g. "gen-3")
	Network string // "tcp", "tcp4", "tcp6" or "unix"
	Addr    string // loopback host:port, or a socket path for "unix"
	Weight  int    // relative share of new traffic, 0..MaxWeight; 0 = none
}

// SetOptions configures a Set.
type SetOptions struct {
	// Window is the span of the sliding statistics window (default 30s),
	// kept as 10 slots of Window/10: BackendStats.Window covers between
	// 9/10 and all of it.
	Window time.Duration

	now func() time.Time // tests
}

// Set is a swappable list of weighted backends shared by the requests or
// connections of one proxy. The zero value is not usable; use NewSet.
type Set struct {
	window time.Duration
	now    func() time.Time

	tab atomic.Pointer[table]

	mu  sync.Mutex          // serialises SetBackends and guards all
	all map[string]*backend // current and draining backends by ID

	unrouted atomic.Int64
}

// NewSet returns an empty Set (every request fails with ErrNoBackend
// until SetBackends is called).
func NewSet(opts SetOptions) *Set {
	s := &Set{window: opts.Window, now: opts.now, all: make(map[string]*backend)}
	if s.window <= 0 {
		s.window = DefaultWindow
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.tab.Store(&table{})
	return s
}

// SetBackends replaces the backends and weights at once. New requests and
// connections use the new list; those in flight finish where they are.
// A backend that keeps its ID, network and address keeps its pooled
// connections and statistics; a removed one is forgotten once its last
// request has finished and SetBackends is called again (Stats reports it,
// inactive, until then). On error nothing changes.
func (s *Set) SetBackends(bs []Backend) error {
	if err := validate(bs); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &table{entries: make([]entry, len(bs))}
	keep := make(map[*backend]bool, len(bs))
	for i, b := range bs {
		st := s.all[b.ID]
		if st == nil || st.Network != b.Network || st.Addr != b.Addr {
			if st != nil { // same ID, new address: the old one drains
				st.retire()
			}
			st = newBackend(s, b)
			s.all[b.ID] = st
		}
		st.weight.Store(int64(b.Weight))
		st.removed.Store(false)
		keep[st] = true
		t.entries[i] = entry{b: st, weight: b.Weight}
	}
	s.tab.Store(t)
	for id, st := range s.all {
		if keep[st] {
			continue
		}
		if st.removed.Load() && st.inflight.Load() == 0 {
			delete(s.all, id) // removed by an earlier call and drained
			continue
		}
		st.retire()
	}
	return nil
}

// Backends returns the current list, in the order it was given.
func (s *Set) Backends() []Backend {
	t := s.tab.Load()
	out := make([]Backend, len(t.entries))
	for i := range t.entries {
		// Only the immutable fields: pick updates current under t.mu.
		b, w := t.entries[i].b, t.entries[i].weight
		out[i] = Backend{ID: b.ID, Network: b.Network, Addr: b.Addr, Weight: w}
	}
	return out
}

// WaitIdle waits until the backend id, once removed from the list by
// SetBackends, has no request or connection in progress (then no new one
// can start there: its process may drain and stop), or until ctx is done.
// An unknown or forgotten id is idle; one still in the list, even at
// weight 0, is an error (ErrBadBackend).
func (s *Set) WaitIdle(ctx context.Context, id string) error {
	s.mu.Lock()
	b := s.all[id]
	s.mu.Unlock()
	if b == nil {
		return nil
	}
	if !b.removed.Load() {
		return fmt.Errorf("%w: %s is still in the list", ErrBadBackend, id)
	}
	ch := make(chan struct{})
	b.mu.Lock()
	b.waiters = append(b.waiters, ch)
	b.mu.Unlock()
	if b.inflight.Load() == 0 {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("proxy: waiting for %s to finish %d in flight: %w", id, b.inflight.Load(), ctx.Err())
	}
}

// acquire picks a backend from *tab (the one named want first, if it has
// a weight, then by weight, never one in skip) and counts it in flight.
// It never returns a backend that a concurrent SetBackends has removed:
// it then looks again in the new list (SetBackends stores the new list
// before it marks removed ones, and the in-flight count is raised before
// the mark is read, so WaitIdle cannot miss a request starting there).
func (s *Set) acquire(tab **table, want string, skip []*backend) *backend {
	for range 64 {
		var b *backend
		if want != "" {
			b = (*tab).byID(want)
		}
		if b == nil {
			b = (*tab).pick(skip)
		}
		if b == nil {
			return nil
		}
		b.begin()
		if !b.removed.Load() {
			return b
		}
		b.end()
		*tab = s.tab.Load()
	}
	return nil // the list changed 64 times while we looked
}

// Unrouted counts requests and connections that found no backend at all
// (all weights 0, or every backend failed to connect).
func (s *Set) Unrouted() int64 { return s.unrouted.Load() }

func validate(bs []Backend) error {
	seen := make(map[string]bool, len(bs))
	for _, b := range bs {
		if b.ID == "" {
			return fmt.Errorf("%w: empty ID", ErrBadBackend)
		}
		if seen[b.ID] {
			return fmt.Errorf("%w: duplicate ID %q", ErrBadBackend, b.ID)
		}
		seen[b.ID] = true
		if b.Weight < 0 || b.Weight > MaxWeight {
			return fmt.Errorf("%w: %s: weight %d outside 0..%d", ErrBadBackend, b.ID, b.Weight, MaxWeight)
		}
		if err := checkLocal(b.Network, b.Addr); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrBadBackend, b.ID, err)
		}
	}
	return nil
}

// checkLocal accepts unix sockets and loopback TCP addresses only.
func checkLocal(network, addr string) error {
	switch network {
	case "unix":
		if addr == "" {
			return errors.New("empty unix socket path")
		}
		return nil
	case "tcp", "tcp4", "tcp6":
	default:
		return fmt.Errorf("unsupported network %q", network)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if port == "" || port == "0" {
		return fmt.Errorf("address %q: no port", addr)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Unmap().IsLoopback() {
		return fmt.Errorf("address %q is not a loopback address", addr)
	}
	return nil
}

// table is one immutable backend list with its smooth weighted round robin
// state (the only mutable part, under mu).
type table struct {
	mu      sync.Mutex
	entries []entry
}

type entry struct {
	b       *backend // immutable, like weight
	weight  int
	current int64 // smooth weighted round robin state, under table.mu
}

// pick returns the next backend by smooth weighted round robin (each entry
// gains its weight, the largest is chosen and loses the sum), skipping
// weight 0 and the backends in skip. nil when none is eligible.
func (t *table) pick(skip []*backend) *backend {
	t.mu.Lock()
	defer t.mu.Unlock()
	var best *entry
	var total int64
	for i := range t.entries {
		e := &t.entries[i]
		if e.weight == 0 || skipped(skip, e.b) {
			continue
		}
		e.current += int64(e.weight)
		total += int64(e.weight)
		if best == nil || e.current > best.current {
			best = e
		}
	}
	if best == nil {
		return nil
	}
	best.current -= total
	return best.b
}

// byID returns the backend of that ID if it has a weight above 0.
func (t *table) byID(id string) *backend {
	for i := range t.entries {
		if e := &t.entries[i]; e.b.ID == id && e.weight > 0 {
			return e.b
		}
	}
	return nil
}

func skipped(skip []*backend, b *backend) bool {
	for _, s := range skip {
		if s == b {
			return true
		}
	}
	return false
}

// backend is the live state of one Backend: in-flight count, pooled HTTP
// connections and statistics. Requests in flight hold a pointer to it, so
// it outlives its removal from the Set.
type backend struct {
	ID, Network, Addr string

	weight   atomic.Int64 // current weight, for Stats
	removed  atomic.Bool
	inflight atomic.Int64

	tr   atomic.Pointer[http.Transport] // created by the first HTTPProxy that uses it
	pool atomic.Pointer[connPool]       // the fast path's, likewise

	mu      sync.Mutex
	waiters []chan struct{} // WaitIdle calls, released when a removed backend is idle

	stats stats
}

func newBackend(s *Set, b Backend) *backend {
	st := &backend{ID: b.ID, Network: b.Network, Addr: b.Addr}
	st.stats.init(s.window, s.now)
	return st
}

func (b *backend) begin() { b.inflight.Add(1) }

// retire marks a backend removed from the Set; its idle connections close
// now or when its last request ends.
func (b *backend) retire() {
	b.weight.Store(0)
	b.removed.Store(true)
	if b.inflight.Load() == 0 {
		b.idle()
	}
}

// end marks one request or connection finished; the last one of a removed
// backend closes its idle pooled connections (and the Transport closes any
// that become idle later, as no new request asks for one).
func (b *backend) end() {
	if b.inflight.Add(-1) == 0 && b.removed.Load() {
		b.idle()
	}
}

// idle runs when a removed backend has nothing left in flight.
func (b *backend) idle() {
	b.closeIdle()
	b.mu.Lock()
	for _, ch := range b.waiters {
		close(ch)
	}
	b.waiters = nil
	b.mu.Unlock()
}

func (b *backend) closeIdle() {
	if tr := b.tr.Load(); tr != nil {
		tr.CloseIdleConnections()
	}
	if cp := b.pool.Load(); cp != nil {
		cp.closeIdle()
	}
}

// dial connects to the backend within timeout; errors wrap ErrBackendDial.
func (b *backend) dial(ctx context.Context, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, b.Network, b.Addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s (%s %s): %w", ErrBackendDial, b.ID, b.Network, b.Addr, err)
	}
	return c, nil
}
