package supervisor

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/proxy"
)

// Passing client connections (--proxy tcp, library generations): the tcp
// proxy chooses a generation by weight as always, then, instead of
// relaying the connection's bytes, gives the client's socket itself to
// the generation over its link (LinkConn.PassConns, the exchange that
// carries idle connections at a drain). The generation queues it for
// Accept on its listener for that public socket and serves the client
// directly; the supervisor closes its copy. Apps without a link that
// passes connections (LISTEN_FDS apps, {port} apps) keep the relay.
//
// One passer per generation sends whatever connections are waiting as
// one batch per round trip, so a burst of new connections costs a few
// round trips, not one each. Each connection ends in exactly one place:
//   - taken by the generation (proxy.Passed);
//   - not taken, and the generation still in the proxy (it refused part
//     of a batch, its link does not pass connections, it exited, or the
//     queue is full): relayed to it like any connection (proxy.PassRelay);
//     a refusal also turns passing off for that generation (a listener
//     that does not match, see passBatch, would refuse every one);
//   - the generation is being retired (retire): offered to the others by
//     weight (proxy.PassRefused), never queued where a drain is coming;
//   - the exchange failed half-way, so the generation may have it:
//     closed, counted as a connection error (proxy.PassLost), never
//     relayed as well.

// passQueueMax bounds the connections waiting for one generation's
// passer; beyond it new ones are relayed (Accept never waits for a pass).
const passQueueMax = 4 * handoff.MaxConnsPerMsg

// passTimeout bounds one batch's exchange on the link. Long: a timeout
// breaks the link (it also carries the drain), and the connections of a
// batch cut short are lost (PassLost).
const passTimeout = 15 * time.Second

type passState int

const (
	passOpen     passState = iota
	passRelaying           // the generation cannot take sockets (any more): relay
	passRefusing           // being retired: it must not get new connections
)

// passer passes accepted connections to one generation.
type passer struct {
	f *front
	g *generation

	mu      sync.Mutex
	state   passState
	queue   []*passReq
	running chan struct{} // closed when the batch loop under way ends; nil when none runs

	passed, relayed, refused, lost atomic.Int64
}

type passReq struct {
	sock int      // index of the public socket (cfg.Listen) it was accepted on
	file *os.File // our duplicate of the client's socket
	res  chan proxy.PassResult
}

// addPasser makes new connections to g (tcp mode, a library generation
// whose link passes connections) go to its process instead of through a
// relay. Called before g gets any weight.
func (f *front) addPasser(g *generation) {
	if f.mode != ProxyTCP {
		return
	}
	link := g.getLink()
	if link == nil || !link.PassesConns() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.passers == nil {
		f.passers = map[string]*passer{}
	}
	id := backendID(g.n)
	if f.passers[id] == nil {
		f.passers[id] = &passer{f: f, g: g}
	}
}

// passer returns the passer of backend id, nil if its connections are
// relayed.
func (f *front) passer(id string) *passer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.passers[id]
}

// passHook is TCPOptions.Pass for the public socket sock.
func (f *front) passHook(sock int) func(context.Context, string, net.Conn) proxy.PassResult {
	return func(ctx context.Context, id string, c net.Conn) proxy.PassResult {
		p := f.passer(id)
		if p == nil {
			return proxy.PassRelay
		}
		return p.pass(ctx, sock, c)
	}
}

// pass queues c for the next batch and waits for its outcome, or until
// ctx is done (the proxy's Shutdown gave up): then the connection counts
// as lost to the proxy, which closes its copy, and the batch's outcome,
// whenever it comes, decides whether the generation serves it.
func (p *passer) pass(ctx context.Context, sock int, c net.Conn) proxy.PassResult {
	if r, done := p.early(); done {
		return r
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return proxy.PassRelay
	}
	file, err := handoff.DupFile(sc, "client")
	if err != nil {
		return proxy.PassRelay // out of descriptors, say: the relay needs none more
	}
	req := &passReq{sock: sock, file: file, res: make(chan proxy.PassResult, 1)}
	p.mu.Lock()
	if r, done := p.earlyLocked(); done {
		p.mu.Unlock()
		file.Close()
		return r
	}
	p.queue = append(p.queue, req)
	if p.running == nil {
		p.running = make(chan struct{})
		go p.run(p.running)
	}
	p.mu.Unlock()
	select {
	case r := <-req.res:
		return r
	case <-ctx.Done():
		return proxy.PassLost // req.res has room for the late answer
	}
}

// early is the outcome of a connection that is not queued: the passer is
// not open, or its queue is full.
func (p *passer) early() (proxy.PassResult, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.earlyLocked()
}

func (p *passer) earlyLocked() (proxy.PassResult, bool) {
	switch {
	case p.state == passRefusing:
		p.refused.Add(1)
		return proxy.PassRefused, true
	case p.state == passRelaying || len(p.queue) >= passQueueMax:
		p.relayed.Add(1)
		return proxy.PassRelay, true
	}
	return 0, false
}

// run passes what is queued, batch after batch, until the queue is empty.
func (p *passer) run(running chan struct{}) {
	for {
		p.mu.Lock()
		batch, state := p.queue, p.state
		p.queue = nil
		if len(batch) == 0 {
			p.running = nil
			close(running)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		switch state {
		case passOpen:
			p.passBatch(batch)
		case passRefusing:
			p.answer(batch, proxy.PassRefused)
		default:
			p.answer(batch, proxy.PassRelay)
		}
	}
}

// passBatch gives the batch's connections to the generation, one
// exchange per public socket (and per MaxConnsPerMsg).
//
// They are passed as accepted on the public socket's --listen network and
// address: the generation's listener for it was asked for with those
// (BATON_PROXIED_LISTEN lets it claim its private socket by the public
// address) and the library finds the listener by them. An app that asked
// for the same socket written otherwise (":8080" for "0.0.0.0:8080")
// takes none: passing then stops for that generation (relay).
func (p *passer) passBatch(batch []*passReq) {
	link := p.g.getLink()
	select {
	case <-p.g.exited:
		link = nil // its sockets may be kept for a successor: relay queues there
	default:
	}
	if link == nil || link.Broken() {
		p.setRelaying("its link is gone")
		p.answer(batch, proxy.PassRelay)
		return
	}
	bySock := map[int][]*passReq{}
	var order []int
	for _, r := range batch {
		if _, ok := bySock[r.sock]; !ok {
			order = append(order, r.sock)
		}
		bySock[r.sock] = append(bySock[r.sock], r)
	}
	for _, sock := range order {
		reqs := bySock[sock]
		for len(reqs) > 0 {
			chunk := reqs[:min(len(reqs), handoff.MaxConnsPerMsg)]
			reqs = reqs[len(chunk):]
			p.mu.Lock()
			state := p.state
			p.mu.Unlock()
			switch state {
			case passOpen:
				p.passChunk(link, sock, chunk)
			case passRefusing: // retired meanwhile
				p.answer(chunk, proxy.PassRefused)
			default: // a refusal earlier in this batch
				p.answer(chunk, proxy.PassRelay)
			}
		}
	}
}

func (p *passer) passChunk(link *handoff.LinkConn, sock int, chunk []*passReq) {
	l := p.f.s.cfg.Listen[sock]
	files := make([]*os.File, len(chunk))
	for i, r := range chunk {
		files[i] = r.file
	}
	ctx, cancel := context.WithTimeout(context.Background(), passTimeout)
	taken, err := link.PassConns(ctx, l.Network, l.Addr, files)
	cancel()
	switch {
	case errors.Is(err, handoff.ErrConnsNotTaken):
		// Refused before anything was sent.
		p.setRelaying(err.Error())
		p.answer(chunk, proxy.PassRelay)
	case err != nil:
		// The link broke: sent or not, we cannot know.
		p.f.s.log.Warn("passing client connections to a generation failed; they are closed", "gen", p.g.n, "pid", p.g.pid, "conns", len(chunk), "err", err)
		p.setRelaying(err.Error())
		p.answer(chunk, proxy.PassLost)
	default:
		taken = min(max(taken, 0), len(chunk))
		p.answer(chunk[:taken], proxy.Passed)
		if taken < len(chunk) {
			// The library takes a prefix and closes its copies of the rest.
			p.f.s.log.Warn("generation refused client connections passed by the proxy; relaying its connections from now on (does the app listen with the --listen address as written?)",
				"gen", p.g.n, "pid", p.g.pid, "listen", l.String(), "taken", taken, "passed", len(chunk))
			p.setRelaying("refused")
			p.answer(chunk[taken:], proxy.PassRelay)
		}
	}
}

// answer tells the connections' proxies the outcome and closes our
// duplicates; those the proxy goes on with get their socket's
// non-blocking mode back (passing them took it away: see restoreNonblock).
func (p *passer) answer(reqs []*passReq, r proxy.PassResult) {
	for _, req := range reqs {
		if r == proxy.PassRelay || r == proxy.PassRefused {
			restoreNonblock(req.file)
		}
		req.file.Close()
		switch r {
		case proxy.Passed:
			p.passed.Add(1)
		case proxy.PassRelay:
			p.relayed.Add(1)
		case proxy.PassRefused:
			p.refused.Add(1)
		case proxy.PassLost:
			p.lost.Add(1)
		}
		req.res <- r
	}
}

func (p *passer) setRelaying(why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == passOpen {
		p.state = passRelaying
		p.f.s.log.Info("proxy relays the generation's connections from now on", "gen", p.g.n, "why", why)
	}
}

// refuse stops passing to a generation being retired: what is queued and
// what comes later is offered to the other generations; it returns once
// the batch under way (if any) has its answer, or ctx is done.
func (p *passer) refuse(ctx context.Context) {
	p.mu.Lock()
	p.state = passRefusing
	running := p.running
	p.mu.Unlock()
	if running != nil {
		select {
		case <-running:
		case <-ctx.Done():
			p.f.s.log.Warn("a pass of client connections to a retired generation was still under way at its drain", "gen", p.g.n, "err", ctx.Err())
		}
	}
	p.f.s.log.Info("client connections of the retired generation", "gen", p.g.n, "pid", p.g.pid,
		"conns_passed", p.passed.Load(), "conns_relayed", p.relayed.Load(), "conns_refused", p.refused.Load(), "conns_lost", p.lost.Load())
}

// gone: the generation exited; unless retired (refusing), its
// connections are relayed, to the sockets a successor takes over.
func (p *passer) gone() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == passOpen {
		p.state = passRelaying
	}
}
