package baton

import (
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
// there; the rest stay here.
func (l *gatedListener) MigrateConns(conns []net.Conn) (int, error) {
	if l.migrate == nil {
		return 0, errNoSuccessor
	}
	return l.migrate(conns)
}

// passConns is the migrate function of the listener desc: to the child
// this generation handed over to.
func (u *Upgrader) passConns(desc handoff.FileDesc, conns []net.Conn) (int, error) {
	u.mu.Lock()
	succ := u.successor
	u.mu.Unlock()
	if succ == nil {
		return 0, errNoSuccessor
	}
	n, err := succ.PassConns(desc.Network, desc.Addr, conns)
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
			if c, err := net.FileConn(f); err == nil {
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
	select {
	case <-l.done:
		return false
	default:
	}
	l.passMu.Lock()
	defer l.passMu.Unlock()
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

// closePassed closes passed connections nobody accepted (Stop).
func (l *gatedListener) closePassed() {
	l.passMu.Lock()
	cs := l.passed
	l.passed = nil
	l.passMu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}
