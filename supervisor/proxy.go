package supervisor

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/proxy"
)

// Proxy mode (baton run --proxy http|tcp): the supervisor serves the
// public sockets itself with internal/proxy and forwards each request
// (http) or connection (tcp) to a generation chosen by weight; every
// generation listens on private loopback sockets of its own. A switch is
// a change of weights, so two generations can share the traffic (a
// canary) and a roll-back is a change of weights too.

// Proxy modes.
const (
	ProxyHTTP = "http"
	ProxyTCP  = "tcp"
)

// PortPlaceholder in the app's arguments is replaced by the private
// loopback port of each generation, for apps that bind their own port
// (proxy mode, one --listen).
const PortPlaceholder = "{port}"

// errCanaryRolledBack: an operator's `baton rollback` (or weight 0 and a
// roll-back) ended the canary; the stable generation serves alone.
var errCanaryRolledBack = errors.New("the canary was rolled back")

// front is baton's proxy in front of the generations: one Set per public
// socket (a generation has one private socket per public one), all with
// the same weights.
type front struct {
	s     *Supervisor
	mode  string
	sets  []*proxy.Set
	https []*proxy.HTTPProxy
	tcps  []*proxy.TCPProxy
	lns   []net.Listener
	serve sync.WaitGroup

	mu     sync.Mutex
	gens   map[int]*backendAddrs // by generation number
	weight map[int]int           // percent of new traffic, by generation number
	canary *canaryRun            // the canary under way, if any
	// passers give tcp connections to library generations instead of
	// relaying them (proxy_pass.go), by backend ID.
	passers map[string]*passer
}

// backendAddrs are one generation's private sockets, in --listen order:
// their addresses and the supervisor's copies (none with {port}). The
// copies let the supervisor see the accept queues, and keep a connection
// the proxy made just before a switch queued rather than reset, until the
// generation has taken it.
type backendAddrs struct {
	pid   int
	addrs []string
	files []*os.File
	// dead: the generation exited while it had a weight (a crash): its
	// sockets stay open, so that the proxy's connections queue there, and
	// the next generation started takes them over (adopted).
	dead, adopted bool
}

func backendID(n int) string { return "gen-" + strconv.Itoa(n) }

// newFront serves the public listeners lns (in cfg.Listen order).
func newFront(s *Supervisor, lns []net.Listener) *front {
	f := &front{s: s, mode: s.cfg.Proxy, lns: lns, gens: map[int]*backendAddrs{}, weight: map[int]int{}}
	for range lns {
		set := proxy.NewSet(proxy.SetOptions{})
		f.sets = append(f.sets, set)
		switch f.mode {
		case ProxyHTTP:
			f.https = append(f.https, proxy.NewHTTP(set, proxy.HTTPOptions{Sticky: s.cfg.Sticky, Logger: s.log.With("component", "proxy")}))
		default:
			f.tcps = append(f.tcps, proxy.NewTCP(set, proxy.TCPOptions{Logger: s.log.With("component", "proxy"), Pass: f.passHook(len(f.tcps))}))
		}
	}
	return f
}

// start serves the public sockets (requests find no backend, and are
// answered 503 or closed, until the first generation is added).
func (f *front) start() {
	for i, ln := range f.lns {
		f.serve.Add(1)
		go func() {
			defer f.serve.Done()
			var err error
			if f.mode == ProxyHTTP {
				err = f.https[i].Serve(ln)
			} else {
				err = f.tcps[i].Serve(ln)
			}
			if err != nil && !errors.Is(err, proxy.ErrClosed) {
				f.s.log.Error("proxy stopped serving", "listen", f.s.cfg.Listen[i].String(), "err", err)
			}
		}()
	}
}

// shutdown stops accepting on the public sockets and waits (until ctx
// ends) for the requests and connections in progress.
func (f *front) shutdown(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range f.https {
		wg.Add(1)
		go func() { defer wg.Done(); p.Shutdown(ctx) }()
	}
	for _, p := range f.tcps {
		wg.Add(1)
		go func() { defer wg.Done(); p.Shutdown(ctx) }()
	}
	wg.Wait()
	f.serve.Wait()
}

// add records generation n's private sockets (at weight 0: it takes no
// traffic until a switch or a canary step gives it some).
func (f *front) add(n, pid int, addrs []string, files []*os.File) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gens[n] = &backendAddrs{pid: pid, addrs: addrs, files: files}
}

// setWeights gives generations the shares w (percent by generation
// number; those not named are taken out) on every public socket at once.
// On error nothing changes.
func (f *front) setWeights(w map[int]int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.setWeightsLocked(w)
}

func (f *front) setWeightsLocked(w map[int]int) error {
	for i, set := range f.sets {
		var bs []proxy.Backend
		for n, pct := range w {
			g := f.gens[n]
			if g == nil {
				continue // gone (it exited): nothing to send there
			}
			bs = append(bs, proxy.Backend{ID: backendID(n), Network: "tcp", Addr: g.addrs[i], Weight: pct})
		}
		if err := set.SetBackends(bs); err != nil {
			if i > 0 {
				// Not expected (the same list for every socket): say so,
				// the earlier sockets have the new weights already.
				f.s.log.Error("proxy weights changed on some sockets only", "err", err)
			}
			return err
		}
	}
	f.weight = map[int]int{}
	for n, pct := range w {
		f.weight[n] = pct
	}
	for n, g := range f.gens {
		if _, in := w[n]; !in && g.dead {
			f.forgetLocked(n) // crashed, out of the proxy now: its successor has the sockets
		}
	}
	return nil
}

// retire takes generation g out of the proxy (no new request or
// connection goes there) and, for http, waits until what it has in
// progress is answered, for at most half the drain timeout: then its
// process is told to drain, with the other half left for that before the
// engine kills it (a WebSocket or a stream may never end by itself).
func (f *front) retire(g *generation) {
	ctx, cancel := context.WithTimeout(context.Background(), f.s.cfg.DrainTimeout/2)
	defer cancel()
	f.retireID(ctx, g.n)
	g.retired.Store(true)
}

func (f *front) retireID(ctx context.Context, n int) {
	f.mu.Lock()
	if _, ok := f.weight[n]; ok {
		w := map[int]int{}
		for m, pct := range f.weight {
			if m != n {
				w[m] = pct
			}
		}
		if err := f.setWeightsLocked(w); err != nil {
			f.s.log.Error("taking a generation out of the proxy", "gen", n, "err", err)
		}
	}
	addrs := f.gens[n]
	p := f.passers[backendID(n)]
	f.mu.Unlock()
	if f.mode != ProxyHTTP {
		// A TCP session lasts as long as its client wants: the app's own
		// drain ends (or passes on) its connections, as in hand-off mode.
		// Only the connections the proxy made (or is passing) just before
		// the switch must have reached the app, or its drain would reset
		// them (a pass it would refuse: the connection goes elsewhere).
		if p != nil {
			p.refuse(ctx)
		}
		f.waitAccepted(ctx, n, addrs)
		return
	}
	for _, set := range f.sets {
		if err := set.WaitIdle(ctx, backendID(n)); err != nil {
			f.s.log.Warn("generation still had requests in progress at its drain", "gen", n, "err", err)
			return
		}
	}
}

// waitAccepted waits (bounded) until generation n, just taken out of a
// tcp proxy, has accepted the connections the proxy made to it before:
// its accept queues are empty twice in a row (a connect under way when it
// was taken out lands within that), or, where the queue length is not
// known, until its sessions have ended or a second has passed.
func (f *front) waitAccepted(ctx context.Context, n int, g *backendAddrs) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	known := g != nil && len(g.files) > 0
	for i := 0; known && i < len(g.files); i++ {
		_, known = acceptQueue(g.files[i])
	}
	if !known {
		idle, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		for _, set := range f.sets {
			set.WaitIdle(idle, backendID(n)) // a timeout is the expected end with long sessions
		}
		return
	}
	empty := 0
	for empty < 2 {
		queued := 0
		for _, file := range g.files {
			q, _ := acceptQueue(file)
			queued += q
		}
		if queued == 0 {
			empty++
		} else {
			empty = 0
		}
		select {
		case <-ctx.Done():
			f.s.log.Warn("generation had connections in its accept queue at its drain", "gen", n, "queued", queued)
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// privatePorts are the ports of generation n's private sockets.
func (f *front) privatePorts(n int) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ports []int
	if g := f.gens[n]; g != nil {
		for _, a := range g.addrs {
			if _, p, err := net.SplitHostPort(a); err == nil {
				if n, err := strconv.Atoi(p); err == nil {
					ports = append(ports, n)
				}
			}
		}
	}
	return ports
}

// exited records that generation n is gone. One that had a share of the
// traffic crashed: its sockets stay open (the proxy's connections wait in
// their queues, as clients wait in the public sockets' queues in hand-off
// mode) until the generation started next takes them over. Otherwise its
// sockets are closed.
func (f *front) exited(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.gens[n]
	if g == nil {
		return
	}
	if p := f.passers[backendID(n)]; p != nil {
		p.gone()
	}
	if f.weight[n] > 0 && len(g.files) > 0 {
		g.dead = true
		return
	}
	f.forgetLocked(n)
}

// orphaned returns the sockets of a crashed generation that no other has
// taken over yet (nil if none), and marks them taken: the caller starts
// the generation that serves them from now on.
func (f *front) orphaned() *backendAddrs {
	f.mu.Lock()
	defer f.mu.Unlock()
	var found *backendAddrs
	last := 0
	for n, g := range f.gens {
		if g.dead && !g.adopted && n > last {
			found, last = g, n
		}
	}
	if found != nil {
		found.adopted = true
	}
	return found
}

// giveBack undoes orphaned after a start that failed.
func (f *front) giveBack(g *backendAddrs) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g.adopted = false
}

// forgetLocked drops generation n and closes the supervisor's copies of
// its sockets (connections still queued there are refused now).
func (f *front) forgetLocked(n int) {
	if g := f.gens[n]; g != nil {
		for _, file := range g.files {
			file.Close()
		}
	}
	delete(f.gens, n)
	delete(f.passers, backendID(n))
}

// info is the proxy's part of status.
func (f *front) info(pids map[int]int) *contract.ProxyInfo {
	f.mu.Lock()
	weights := make(map[int]int, len(f.weight))
	for n, w := range f.weight {
		weights[n] = w
	}
	var cs *contract.CanaryState
	if f.canary != nil {
		c := f.canary.state()
		cs = &c
	}
	f.mu.Unlock()
	in := &contract.ProxyInfo{Mode: f.mode, Canary: cs}
	agg := f.stats()
	for _, set := range f.sets {
		in.Unrouted += set.Unrouted()
	}
	for n, w := range weights {
		st := agg[backendID(n)]
		b := contract.ProxyBackend{Generation: n, PID: pids[n], Weight: w, InFlight: st.InFlight, Requests: st.Requests,
			ErrorRatio: st.Window.ErrorRatio(), P99: st.Window.P99, WindowSeconds: st.Window.Span.Seconds(),
			Passed: st.Passed, Refused: st.Refused}
		if st.Window.Span > 0 {
			b.RatePerSecond = float64(st.Window.Requests) / st.Window.Span.Seconds()
		}
		f.mu.Lock()
		if g := f.gens[n]; g != nil && len(g.addrs) > 0 {
			b.Addr = g.addrs[0]
		}
		f.mu.Unlock()
		in.Backends = append(in.Backends, b)
	}
	slices.SortFunc(in.Backends, func(a, b contract.ProxyBackend) int { return a.Generation - b.Generation })
	return in
}

// stats are every backend's figures summed over the public sockets.
func (f *front) stats() map[string]proxy.BackendStats {
	if len(f.sets) == 1 {
		return f.sets[0].Stats()
	}
	agg := map[string]proxy.BackendStats{}
	for _, set := range f.sets {
		for id, st := range set.Stats() {
			a, ok := agg[id]
			if !ok {
				agg[id] = st
				continue
			}
			a.Requests += st.Requests
			a.Errors5xx += st.Errors5xx
			a.ConnErrors += st.ConnErrors
			a.Retried += st.Retried
			a.InFlight += st.InFlight
			a.BytesIn += st.BytesIn
			a.BytesOut += st.BytesOut
			a.Passed += st.Passed
			a.Refused += st.Refused
			a.Latency.Merge(st.Latency)
			a.Window.Requests += st.Window.Requests
			a.Window.Errors5xx += st.Window.Errors5xx
			a.Window.ConnErrors += st.Window.ConnErrors
			a.Window.P50 = max(a.Window.P50, st.Window.P50) // the worst socket's
			a.Window.P99 = max(a.Window.P99, st.Window.P99)
			agg[id] = a
		}
	}
	return agg
}

// substitutePort replaces PortPlaceholder in args by port.
func substitutePort(args []string, port int) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, PortPlaceholder, strconv.Itoa(port))
	}
	return out
}

// usesPortPlaceholder reports whether the app binds its own port.
func usesPortPlaceholder(cmd []string) bool {
	for _, a := range cmd[1:] {
		if strings.Contains(a, PortPlaceholder) {
			return true
		}
	}
	return false
}

// commit switches new traffic to g: all of it (blue/green, a restart, a
// roll-back), or, for an upgrade with a canary plan while another
// generation serves, step by step as the plan and the operator say.
func (f *front) commit(g *generation) error {
	f.addPasser(g)
	if req := g.canary; req != nil {
		if stable := f.s.currentGen(); stable != nil && stable != g {
			select {
			case <-stable.exited:
			default:
				return f.runCanary(req, g, stable)
			}
		}
	}
	return f.setWeights(map[int]int{g.n: 100})
}

func (f *front) runCanary(req *canaryRequest, g, stable *generation) error {
	c := &canaryRun{f: f, req: req, canary: g, stable: stable, plan: req.plan, cmds: make(chan canaryCmd)}
	f.mu.Lock()
	f.canary = c
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.canary = nil
		f.mu.Unlock()
	}()
	return c.run(req.held)
}

// currentCanary is the canary under way, if any.
func (f *front) currentCanary() *canaryRun {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.canary
}

// privateAddr is the address of g's first private socket (proxy mode).
func (g *generation) privateAddr() string {
	if len(g.privAddrs) == 0 {
		return ""
	}
	return g.privAddrs[0]
}

// dialOK reports whether something accepts connections at addr.
func dialOK(ctx context.Context, addr string) bool {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
