package baton

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/baton-go/baton/internal/handoff"
)

// Idle client connections move to the next generation (issue 11): an HTTP
// drain (httpdrain) that serves baton's listener finds it is an
// httpdrain.Migrator and gives it the connections that wait for their next
// request; baton passes them to the successor on the handoff channel, and
// the successor's listener returns them from Accept as if it had just
// accepted them, so the same http.Server serves them.

// errNoSuccessor: there is nobody to pass connections to (no handover by
// this process, e.g. under baton run, or the successor is gone).
var errNoSuccessor = errors.New("baton: no successor of this generation takes connections")

// MigrateConns passes conns, accepted by this listener, to the generation
// that took over from this one (httpdrain.Migrator). conns[:n] are served
// there; the rest stay here. Concurrent calls are pipelined (handoff's
// PassConns). When ctx ends first, none counts as passed: whether the
// successor took them is not known yet, and keeping them is the lesser
// harm (the drain closes what is left at its deadline anyway).
func (l *gatedListener) MigrateConns(ctx context.Context, conns []net.Conn) (int, error) {
	if l.migrate == nil {
		return 0, errNoSuccessor
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("baton: passing %d connections: %w", len(conns), err)
	}
	if ctx.Done() == nil {
		return l.migrate(conns)
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1) // the call ends on its own timeouts
	go func() {
		n, err := l.migrate(conns)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		return r.n, r.err
	case <-ctx.Done():
		return 0, fmt.Errorf("baton: passing %d connections: %w", len(conns), ctx.Err())
	}
}

// MigrationReady reports whether MigrateConns can pass connections now
// (httpdrain.Migrator): this generation handed over to one that takes
// them.
func (l *gatedListener) MigrationReady() bool {
	return l.migrationReady != nil && l.migrationReady()
}

// migrationReady: our successor takes connections (library: the child we
// handed over to said so; baton run: the supervisor, which relays them,
// asked us to drain over the link).
func (u *Upgrader) migrationReady() bool {
	u.mu.Lock()
	succ := u.successor
	u.mu.Unlock()
	if succ != nil {
		return succ.TakesConns()
	}
	return u.link != nil && u.link.PassesConns() && u.linkDrained.Load()
}

// passConns is the migrate function of the listener desc: to the child
// this generation handed over to, or under baton run through the
// supervisor.
func (u *Upgrader) passConns(desc handoff.FileDesc, conns []net.Conn) (int, error) {
	u.mu.Lock()
	succ := u.successor
	u.mu.Unlock()
	if succ == nil {
		if u.link != nil && u.link.PassesConns() {
			return u.passViaSupervisor(desc, conns)
		}
		return 0, errNoSuccessor
	}
	n, err := succ.PassConns(context.Background(), desc.Network, desc.Addr, conns)
	if err != nil {
		return n, fmt.Errorf("baton: %w", err)
	}
	return n, nil
}

// takeConns serves connections the previous generation passed: those
// accepted on our listener (network, addr) go to its Accept queue. It
// owns files (handoff.Inherited.TakeConns).
func (u *Upgrader) takeConns(network, addr string, files []*os.File) int {
	var gl *gatedListener
	u.mu.Lock()
	if !u.handedOver && !u.stopped {
		for _, e := range u.entries {
			if l, ok := e.ln.(*gatedListener); ok && e.desc.Network == network && e.desc.Addr == addr {
				gl = l
				break
			}
		}
	}
	u.mu.Unlock()
	taken := 0
	for _, f := range files {
		if gl != nil { // after a failure, none: the parent keeps a suffix
			if c, err := handoff.FileConn(f); err == nil {
				if gl.inject(c) {
					taken++
				} else {
					c.Close()
					gl = nil // closed: no more
				}
			} else {
				gl = nil
			}
		}
		f.Close()
	}
	u.mu.Lock()
	u.connsTaken += taken
	u.mu.Unlock()
	if taken < len(files) {
		u.log.Warn("connections passed by the previous generation not taken; it keeps them", "listener", network+" "+addr, "taken", taken, "passed", len(files))
	}
	return taken
}

// inject queues c for Accept and wakes a pending Accept (by a deadline in
// the past on the listening socket). It reports false when this listener
// no longer accepts, or cannot be woken (no deadlines).
func (l *gatedListener) inject(c net.Conn) bool {
	d, ok := l.Listener.(interface{ SetDeadline(time.Time) error })
	if !ok {
		return false
	}
	l.passMu.Lock()
	defer l.passMu.Unlock()
	if l.passClosed {
		return false // closed (handed over or stopped): passQueued has run
	}
	l.passed = append(l.passed, c)
	if !l.woken {
		l.woken = true
		_ = d.SetDeadline(aLongTimeAgo)
	}
	return true
}

// aLongTimeAgo stops a pending Accept at once.
var aLongTimeAgo = time.Unix(1, 0)

// acceptOpen is Accept once the gate is open: passed connections first,
// then the listening socket's.
func (l *gatedListener) acceptOpen() (net.Conn, error) {
	for {
		l.passMu.Lock()
		if len(l.passed) > 0 {
			c := l.passed[0]
			l.passed[0] = nil
			l.passed = l.passed[1:]
			l.passMu.Unlock()
			return c, nil
		}
		if l.woken {
			// Every passed conn is out: the app's own deadline again.
			l.woken = false
			l.dlMu.Lock()
			dl := l.deadline
			l.dlMu.Unlock()
			if d, ok := l.Listener.(interface{ SetDeadline(time.Time) error }); ok {
				_ = d.SetDeadline(dl)
			}
		}
		l.passMu.Unlock()
		c, err := l.Listener.Accept()
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			l.passMu.Lock()
			woken := l.woken
			l.passMu.Unlock()
			if woken {
				continue // a passed conn, not the app's deadline
			}
		}
		return c, err
	}
}

// passQueued passes on (in the background: Close never blocks) the
// connections our predecessor passed that the app had not accepted yet
// when this listener closed at our own handover: nobody else holds them,
// and closing them would reset a client that sends at that moment. Those
// the successor does not take are closed.
func (l *gatedListener) passQueued() {
	l.passMu.Lock()
	cs := l.passed
	l.passed = nil
	l.passClosed = true
	l.passMu.Unlock()
	if len(cs) == 0 {
		return
	}
	l.passing.Add(1)
	go func() {
		defer l.passing.Done()
		n, _ := l.MigrateConns(context.Background(), cs)
		for _, c := range cs[max(n, 0):] {
			c.Close()
		}
	}()
}

// closePassed closes passed connections nobody accepted (Stop), once
// those being passed on (passQueued) are on their way: this process may
// exit right after.
func (l *gatedListener) closePassed() {
	l.passing.Wait() // bounded by MigrateConns' own timeouts
	l.passMu.Lock()
	cs := l.passed
	l.passed = nil
	l.passMu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// Under baton run the supervisor carries our connections to the serving
// generation: it pulls batches from us over our link (handoff's
// LinkConnsHooks: nextConnBatch, connBatchResult).

// connBatch is one batch of connections waiting for the supervisor.
type connBatch struct {
	network, addr string
	conns         []net.Conn
	taken         chan int // how many the serving generation took (buffered)
}

// connsPullTimeout bounds the wait for the supervisor to pull a batch (it
// pulls from the moment it asked us to drain) and for its outcome.
const connsPullTimeout = 10 * time.Second

// connsAnswerTimeout bounds the wait for how many of a pulled batch were
// taken: well beyond the supervisor's exchange with the serving
// generation (bounded by its own timeout), so that an answer is never
// given up on while the connections may be served there.
const connsAnswerTimeout = 60 * time.Second

// passViaSupervisor queues conns for the supervisor in batches and returns
// how many the serving generation took (a prefix of conns).
func (u *Upgrader) passViaSupervisor(desc handoff.FileDesc, conns []net.Conn) (int, error) {
	passed := 0
	for len(conns) > 0 {
		b := connBatch{network: desc.Network, addr: desc.Addr, conns: conns[:min(len(conns), handoff.MaxConnsPerMsg)], taken: make(chan int, 1)}
		pull := time.NewTimer(connsPullTimeout)
		select {
		case u.connOut <- b:
			pull.Stop()
		case <-u.linkDone:
			pull.Stop()
			return passed, fmt.Errorf("%w: the supervisor link is closed", errNoSuccessor)
		case <-pull.C:
			return passed, fmt.Errorf("%w: the supervisor did not ask for connections within %s", errNoSuccessor, connsPullTimeout)
		}
		// Pulled: the supervisor's answer comes with its next pull, once
		// the serving generation said how many it took (its own exchange
		// is bounded); the link's end tells the rest.
		answer := time.NewTimer(connsAnswerTimeout)
		var n int
		select {
		case n = <-b.taken:
			answer.Stop()
		case <-u.linkDone:
			answer.Stop()
			select {
			case n = <-b.taken:
			default:
				// Sent or not, we cannot tell: keeping them is the lesser harm.
				return passed, fmt.Errorf("%w: the supervisor link closed while passing connections", errNoSuccessor)
			}
		case <-answer.C:
			return passed, fmt.Errorf("%w: no word from the supervisor on %d connections within %s", errNoSuccessor, len(b.conns), connsAnswerTimeout)
		}
		passed += n
		if n < len(b.conns) {
			return passed, fmt.Errorf("baton: the serving generation took %d of %d connections", n, len(b.conns))
		}
		conns = conns[len(b.conns):]
	}
	return passed, nil
}

// nextConnBatch gives the supervisor the next batch, waiting at most wait.
func (u *Upgrader) nextConnBatch(wait time.Duration) (network, addr string, conns []net.Conn) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case b := <-u.connOut:
		u.pulled = b
		return b.network, b.addr, b.conns
	case <-timer.C:
		return "", "", nil
	}
}

// connBatchResult tells the batch pulled last how many were taken.
func (u *Upgrader) connBatchResult(taken int) {
	if u.pulled.taken != nil {
		u.pulled.taken <- taken
		u.pulled = connBatch{}
	}
}
