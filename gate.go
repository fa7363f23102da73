package baton

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// gatedListener is what Listen returns, in every generation and on every
// platform, so that the dynamic type an app sees never changes between a
// first generation, an upgraded one, one started by systemd socket
// activation and one under `baton run`.
//
// It holds back Accept until the generation is ready. A new generation
// shares its sockets with the one still serving: whatever it accepted
// before Ready would be reset if the upgrade were called off (ready
// timeout, refusal, crash), so until then the old generation takes every
// connection. gate.open is called once the go-ahead arrived; a first
// generation's gate is open from the start.
type gatedListener struct {
	net.Listener
	gate *gate
	once sync.Once
	done chan struct{}

	dlMu      sync.Mutex
	deadline  time.Time     // last SetDeadline, also honoured while the gate is shut
	dlChanged chan struct{} // closed (and replaced) by SetDeadline: a waiting Accept re-reads deadline

	waiting atomic.Int32 // Accepts waiting for the gate (tests wait for one instead of sleeping)

	// Client connections passed on at a handover (conns.go): migrate
	// passes this generation's to its successor; passed holds those its
	// predecessor passed to us, which Accept returns first.
	migrate        func([]net.Conn) (int, error)
	migrationReady func() bool
	passMu         sync.Mutex
	passed         []net.Conn
	passClosed     bool           // closed: no more conns taken (passQueued has run)
	woken          bool           // a passed conn stopped Accept by a deadline in the past
	passing        sync.WaitGroup // passQueued at work
}

func newGatedListener(ln net.Listener, g *gate) *gatedListener {
	return &gatedListener{Listener: ln, gate: g, done: make(chan struct{}), dlChanged: make(chan struct{})}
}

func (l *gatedListener) Accept() (net.Conn, error) {
	select {
	case <-l.gate.c:
		return l.acceptOpen()
	default:
	}
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	for {
		l.dlMu.Lock()
		dl, changed := l.deadline, l.dlChanged
		l.dlMu.Unlock()
		var expired <-chan time.Time
		var timer *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return nil, l.opError(os.ErrDeadlineExceeded)
			}
			timer = time.NewTimer(d)
			expired = timer.C
		}
		select {
		case <-l.gate.c:
			if timer != nil {
				timer.Stop()
			}
			return l.acceptOpen()
		case <-l.gate.shutC:
		case <-l.done:
		case <-changed:
			if timer != nil {
				timer.Stop()
			}
			continue
		case <-expired:
			return nil, l.opError(os.ErrDeadlineExceeded)
		}
		if timer != nil {
			timer.Stop()
		}
		return nil, l.opError(net.ErrClosed)
	}
}

func (l *gatedListener) opError(err error) error {
	return &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: err}
}

// SetDeadline sets the deadline of Accept, as on *net.TCPListener and
// *net.UnixListener, including an Accept still waiting for Ready. It
// returns an error wrapping ErrUnsupported where the listening socket has
// no deadlines (baton's own Windows listener).
func (l *gatedListener) SetDeadline(t time.Time) error {
	d, ok := l.Listener.(interface{ SetDeadline(time.Time) error })
	if !ok {
		return &net.OpError{Op: "set", Net: l.Addr().Network(), Addr: l.Addr(), Err: fmt.Errorf("listener deadline: %w", ErrUnsupported)}
	}
	l.passMu.Lock()
	defer l.passMu.Unlock()
	if !l.woken { // else a passed conn is waking Accept: applied after it (acceptOpen)
		if err := d.SetDeadline(t); err != nil {
			return err
		}
	}
	l.dlMu.Lock()
	l.deadline = t
	close(l.dlChanged)
	l.dlChanged = make(chan struct{})
	l.dlMu.Unlock()
	return nil
}

// Close never blocks (see docs/drain.md, point 4): it wakes a waiting Accept.
// Where closing the listener would close the socket itself (baton's own
// Windows listener: there is no duplicate kept for the next generation),
// it only stops accepting, and the socket is closed by closeSocket when
// the generation stops: a generation that handed over keeps it through
// its successor's probation.
func (l *gatedListener) Close() error {
	l.once.Do(func() { close(l.done) })
	l.passQueued()
	if s, ok := l.Listener.(interface{ StopAccepting() }); ok {
		s.StopAccepting()
		return nil
	}
	return l.Listener.Close()
}

// closeSocket closes the listening socket for good (Stop).
func (l *gatedListener) closeSocket() {
	l.once.Do(func() { close(l.done) })
	l.Listener.Close()
	l.closePassed()
}

// gate opens once (Ready), or shuts (Stop before Ready: Accept returns).
type gate struct {
	c        chan struct{}
	once     sync.Once
	shutC    chan struct{}
	shutOnce sync.Once
}

func newGate() *gate { return &gate{c: make(chan struct{}), shutC: make(chan struct{})} }

// openGate is the gate of a first generation's listeners: nothing to wait for.
func openGate() *gate {
	g := newGate()
	g.open()
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.c) }) }

func (g *gate) shut() { g.shutOnce.Do(func() { close(g.shutC) }) }
