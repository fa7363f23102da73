package baton

import (
	"net"
	"sync"
)

// gatedListener holds back Accept until the generation is ready. A new
// generation shares its sockets with the one still serving: whatever it
// accepted before Ready would be reset if the upgrade were called off
// (ready timeout, refusal, crash), so until then the old generation takes
// every connection. gate.open is called once the go-ahead arrived.
type gatedListener struct {
	net.Listener
	gate *gate
	once sync.Once
	done chan struct{}
}

func (l *gatedListener) Accept() (net.Conn, error) {
	select {
	case <-l.gate.c:
		return l.Listener.Accept()
	case <-l.gate.shutC:
	case <-l.done:
	}
	return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
}

// Close never blocks (see docs/drain.md, point 4): it wakes a waiting Accept.
func (l *gatedListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// gate opens once (Ready), or shuts (Stop before Ready: Accept returns).
type gate struct {
	c        chan struct{}
	once     sync.Once
	shutC    chan struct{}
	shutOnce sync.Once
}

func newGate() *gate { return &gate{c: make(chan struct{}), shutC: make(chan struct{})} }

func (g *gate) open() { g.once.Do(func() { close(g.c) }) }

func (g *gate) shut() { g.shutOnce.Do(func() { close(g.shutC) }) }
