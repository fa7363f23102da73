//go:build unix

package httpdrain_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-go/baton/httpdrain"
)

// A hand-over in one process, with real sockets (Unix: descriptors are
// duplicated; baton passes no connections on Windows yet): the old server serves a
// duplicate of the listening socket's descriptor (as a process that handed
// over does), the new one the socket itself; the old one's listener is a
// Migrator that passes a connection by duplicating its descriptor (what
// SCM_RIGHTS does between processes) and serving the copy in the new
// server.

// passingListener is the old server's listener.
type passingListener struct {
	net.Listener
	next     *chanListener
	refuse   atomic.Bool
	notReady atomic.Bool
	calls    atomic.Int32
	// halfEvery > 0: every halfEvery-th call passes only the first half.
	halfEvery           int32
	inFlight, maxFlight atomic.Int32
	offered             atomic.Int32 // conns given to MigrateConns
}

func (l *passingListener) MigrationReady() bool { return !l.notReady.Load() }

func (l *passingListener) MigrateConns(_ context.Context, conns []net.Conn) (int, error) {
	call := l.calls.Add(1)
	defer l.offered.Add(int32(len(conns)))
	in := l.inFlight.Add(1)
	defer l.inFlight.Add(-1)
	for m := l.maxFlight.Load(); in > m && !l.maxFlight.CompareAndSwap(m, in); m = l.maxFlight.Load() {
	}
	if l.refuse.Load() {
		return 0, errors.New("the test refuses")
	}
	var refused error
	if l.halfEvery > 0 && call%l.halfEvery == 0 {
		conns = conns[:len(conns)/2]
		refused = errors.New("the test takes half")
	}
	for i, c := range conns {
		f, err := c.(*net.TCPConn).File()
		if err != nil {
			return i, err
		}
		nc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return i, err
		}
		l.next.conns <- nc
	}
	return len(conns), refused
}

// chanListener is where the new server receives passed connections.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// generations is an old server (A) that will hand over and a new one (B).
type generations struct {
	old, new    *testServer
	pass        *passingListener
	addr        string
	served      sync.Map // request id -> "A"/"B" (each id once)
	twice       atomic.Int32
	slowStarted atomic.Bool   // GET /slow is running
	release     chan struct{} // closed: GET /slow answers
}

// handler answers with the generation's name and counts each request id.
func (g *generations) handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			g.slowStarted.Store(true)
			<-g.release
		}
		body, _ := io.ReadAll(r.Body)
		if id := string(body); id != "" {
			if _, dup := g.served.LoadOrStore(id, name); dup {
				g.twice.Add(1)
			}
		}
		w.Header().Set("X-Gen", name)
		io.WriteString(w, name)
	})
}

// newGenerations starts A on a duplicate of a fresh listener; B starts with
// startNew (serving the listener itself and what A passes).
func newGenerations(t *testing.T, opts httpdrain.Options) *generations {
	t.Helper()
	return newGenerationsWith(t, opts, nil)
}

// newGenerationsWith is newGenerations with the old server's http.Server
// adjusted by configure (may be nil).
func newGenerationsWith(t *testing.T, opts httpdrain.Options, configure func(*http.Server)) *generations {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	dup, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	g := &generations{addr: ln.Addr().String(), release: make(chan struct{})}
	g.pass = &passingListener{Listener: dup, next: &chanListener{addr: ln.Addr(), conns: make(chan net.Conn, 4096), closed: make(chan struct{})}}
	hs := &http.Server{Handler: g.handler("A")}
	if configure != nil {
		configure(hs)
	}
	g.old = serveOn(t, hs, opts, g.pass)
	g.old.ln = ln
	return g
}

// startNew starts B: on the shared socket and on the passed conns.
func (g *generations) startNew(t *testing.T) {
	t.Helper()
	g.new = serveOn(t, &http.Server{Handler: g.handler("B")}, httpdrain.Options{IdleGrace: -1}, g.old.ln) // no grace: the test cleanup ends at once
	go g.new.Serve(g.pass.next)
}

// drainInBackground starts the old server's drain and returns once it has
// started; the channel gets its report.
func (g *generations) drainInBackground(t *testing.T) <-chan httpdrain.Report {
	t.Helper()
	drained := make(chan httpdrain.Report, 1)
	go func() {
		rep, _ := g.old.Drain(ctxTimeout(t, testTimeout))
		drained <- rep
	}()
	waitFor(t, "the drain to start", g.old.Draining)
	return drained
}

// TestIdleConnsMigrate: keep-alive connections idle at the drain go on
// with the new server without a reconnect, the old one ends at once
// (no idle grace), and nothing is answered twice.
func TestIdleConnsMigrate(t *testing.T) {
	g := newGenerations(t, httpdrain.Options{IdleGrace: longGrace})
	const n = 20
	var cs []*client
	for i := 0; i < n; i++ {
		c := dial(t, g.addr)
		if resp, _ := c.mustDo(t, "POST", "/", fmt.Sprintf("first-%d", i)); resp.Header.Get("X-Gen") != "A" {
			t.Fatalf("first request answered by %q", resp.Header.Get("X-Gen"))
		}
		cs = append(cs, c)
	}
	g.startNew(t)
	rep, err := g.old.Drain(ctxTimeout(t, testTimeout))
	checkClean(t, rep, err)
	t.Logf("report %+v", rep)
	if rep.Migrated != n || rep.MigrationFailed != 0 || rep.IdleWaited > time.Second {
		t.Fatalf("report: %+v, want %d migrated and no idle grace", rep, n)
	}
	for i, c := range cs {
		resp, _ := c.mustDo(t, "POST", "/", fmt.Sprintf("second-%d", i))
		if got := resp.Header.Get("X-Gen"); got != "B" || resp.Close {
			t.Fatalf("conn %d after the drain: answered by %q (close %v), want B on the same conn", i, got, resp.Close)
		}
	}
	if d := g.twice.Load(); d != 0 {
		t.Fatalf("%d requests answered twice", d)
	}
}

// TestManyConnsMigrateInBatches: more idle conns than the batches in
// flight at once hold; the passes run concurrently (at most four at a
// time), every third takes only half its batch, and each conn is served
// once, by B when its batch took it, else by A (its next request answered
// with Connection: close).
func TestManyConnsMigrateInBatches(t *testing.T) {
	g := newGenerations(t, httpdrain.Options{IdleGrace: longGrace})
	g.pass.halfEvery = 3
	const n = 1100
	var cs []*client
	for i := 0; i < n; i++ {
		c := dial(t, g.addr)
		c.mustDo(t, "POST", "/", fmt.Sprintf("first-%d", i))
		cs = append(cs, c)
	}
	g.startNew(t)
	drained := g.drainInBackground(t)
	waitFor(t, "every conn passed or refused", func() bool { return g.pass.offered.Load() == n })
	for i, c := range cs {
		resp, _ := c.mustDo(t, "POST", "/", fmt.Sprintf("second-%d", i))
		if got := resp.Header.Get("X-Gen"); got != "B" && !(got == "A" && resp.Close) {
			t.Fatalf("conn %d after its migration: answered by %q (close %v)", i, got, resp.Close)
		}
	}
	rep := <-drained
	t.Logf("report %+v, %d calls, at most %d at once", rep, g.pass.calls.Load(), g.pass.maxFlight.Load())
	if rep.Migrated+rep.MigrationFailed != n || rep.MigrationFailed == 0 {
		t.Fatalf("report %+v: want %d conns migrated or refused, some refused", rep, n)
	}
	if m := g.pass.maxFlight.Load(); m > 4 {
		t.Fatalf("%d MigrateConns calls at once, want at most 4", m)
	}
	if d := g.twice.Load(); d != 0 {
		t.Fatalf("%d requests answered twice", d)
	}
}

// TestMigrationRaces: clients with no think time send POSTs back to back on
// keep-alive connections while the old server drains: every request gets
// exactly one answer, from one of the two, and none fails. Conns busy at
// the drain start are answered by the old server and passed once idle;
// a request that arrives while its conn is being claimed is answered by
// whichever server read it.
func TestMigrationRaces(t *testing.T) {
	for round := 0; round < 5; round++ {
		g := newGenerations(t, httpdrain.Options{IdleGrace: longGrace})
		const clients = 16
		var (
			wg      sync.WaitGroup
			stop    atomic.Bool
			sent    atomic.Int64
			failed  atomic.Int64
			firstMu sync.Mutex
			first   error
			onA     atomic.Int64 // requests answered by the old server (to know the load was on before the drain)
		)
		for i := 0; i < clients; i++ {
			c := dial(t, g.addr)
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				for j := 0; !stop.Load() && j < 100000; j++ {
					id := strconv.Itoa(round) + "-" + strconv.Itoa(i) + "-" + strconv.Itoa(j)
					sent.Add(1)
					resp, body, err := c.do("POST", "/", id)
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d %q", resp.StatusCode, body)
					}
					if err != nil {
						failed.Add(1)
						firstMu.Lock()
						if first == nil {
							first = fmt.Errorf("client %d request %d: %w", i, j, err)
						}
						firstMu.Unlock()
						return
					}
					if body == "A" {
						onA.Add(1)
					}
					if resp.Close {
						return // told to go: the connection ends here (no migration)
					}
				}
			}(i)
		}
		waitFor(t, "load on the old server", func() bool { return onA.Load() >= 200 })
		g.startNew(t)
		rep, err := g.old.Drain(ctxTimeout(t, testTimeout))
		checkClean(t, rep, err)
		// Let every client send on the new server a little.
		after := sent.Load()
		waitFor(t, "load on the new server", func() bool { return sent.Load() >= after+200 || failed.Load() > 0 })
		stop.Store(true)
		wg.Wait()
		if failed.Load() != 0 {
			t.Fatalf("round %d: %d requests failed; first: %v (report %+v)", round, failed.Load(), first, rep)
		}
		if d := g.twice.Load(); d != 0 {
			t.Fatalf("round %d: %d requests answered twice", round, d)
		}
		if rep.Migrated == 0 {
			t.Fatalf("round %d: nothing migrated: %+v", round, rep)
		}
		t.Logf("round %d: %d requests, migrated %d, kept %d", round, sent.Load(), rep.Migrated, rep.MigrationFailed)
	}
}

// TestSplitRequestAroundDrain: a request whose first bytes the old server
// has read when the drain starts stays with it and is answered once; the
// conn is passed after that answer.
func TestSplitRequestAroundDrain(t *testing.T) {
	g := newGenerations(t, httpdrain.Options{IdleGrace: longGrace})
	c := dial(t, g.addr)
	c.mustDo(t, "POST", "/", "warm")
	// Half a request: the old server reads it and waits for the rest
	// (its state is still idle: net/http calls a conn active only once
	// the whole header is in).
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: test\r\nContent-Le"); err != nil {
		t.Fatal(err)
	}
	g.startNew(t)
	drained := g.drainInBackground(t)
	if _, err := io.WriteString(c, "ngth: 5\r\n\r\nsplit"); err != nil {
		t.Fatal(err)
	}
	resp, body, err := c.read()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("split request: %v %v %q", resp, err, body)
	}
	if g.twice.Load() != 0 {
		t.Fatal("the split request was answered twice")
	}
	if v, _ := g.served.Load("split"); v == nil {
		t.Fatal("the split request was never served")
	}
	// Whoever answered, the conn goes on (with the new server, once the
	// old one passed it; or it was told to close). Sent before the pass,
	// the next request could be read by the old server first (and be
	// answered there, again without close): wait for the pass.
	if !resp.Close {
		waitFor(t, "the conn to be passed", func() bool { return g.pass.offered.Load() == 1 })
		resp, _ = c.mustDo(t, "POST", "/", "after-split")
		if resp.Header.Get("X-Gen") != "B" {
			t.Fatalf("after the split request: answered by %q, want B", resp.Header.Get("X-Gen"))
		}
	}
	rep := <-drained
	t.Logf("split request answered by %s; report %+v", body, rep)
}

// TestPipelinedRequestsStay: two requests written at once: the second sits
// in the old server's read buffer after the first is answered, so the
// conn must not be passed while it does. Both are answered, once.
func TestPipelinedRequestsStay(t *testing.T) {
	for i := 0; i < 20; i++ {
		g := newGenerations(t, httpdrain.Options{IdleGrace: longGrace})
		c := dial(t, g.addr)
		c.mustDo(t, "POST", "/", fmt.Sprintf("warm-%d", i))
		g.startNew(t)
		done := make(chan struct{})
		go func() {
			defer close(done)
			g.old.Drain(ctxTimeout(t, testTimeout))
		}()
		for _, id := range []string{"p1", "p2"} {
			id = fmt.Sprintf("%s-%d", id, i)
			fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n%s", len(id), id)
		}
		for k := 0; k < 2; k++ {
			if resp, body, err := c.read(); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("round %d, pipelined response %d: %v %q", i, k, err, body)
			}
		}
		<-done
		if g.twice.Load() != 0 {
			t.Fatalf("round %d: answered twice", i)
		}
	}
}

// TestMigrationRefused: when the Migrator refuses, the conns stay and are
// drained as without migration (idle grace, "Connection: close" on the
// next answer); nothing is lost.
func TestMigrationRefused(t *testing.T) {
	g := newGenerations(t, httpdrain.Options{IdleGrace: longGrace})
	g.pass.refuse.Store(true)
	const n = 5
	var cs []*client
	for i := 0; i < n; i++ {
		c := dial(t, g.addr)
		c.mustDo(t, "POST", "/", fmt.Sprintf("first-%d", i))
		cs = append(cs, c)
	}
	g.startNew(t)
	done := make(chan httpdrain.Report, 1)
	go func() {
		rep, err := g.old.Drain(ctxTimeout(t, testTimeout))
		checkClean(t, rep, err)
		done <- rep
	}()
	waitFor(t, "the refused migration", func() bool { return g.pass.calls.Load() > 0 })
	for i, c := range cs {
		resp, _ := c.mustDo(t, "POST", "/", fmt.Sprintf("second-%d", i))
		if got := resp.Header.Get("X-Gen"); got != "A" || !resp.Close {
			t.Fatalf("conn %d: answered by %q (close %v), want A with Connection: close", i, got, resp.Close)
		}
	}
	rep := <-done
	if rep.Migrated != 0 || rep.MigrationFailed != n {
		t.Fatalf("report %+v, want %d failed migrations", rep, n)
	}
}

// TestSplitAtLineBoundary: a next request whose first segment ends with a
// whole line ("POST / HTTP/1.1\r\n") leaves net/http's buffer empty while
// it waits for the rest: the conn must still stay (bytes were read since
// it went idle), and the request be answered once.
func TestSplitAtLineBoundary(t *testing.T) {
	g := newGenerations(t, httpdrain.Options{IdleGrace: longGrace})
	c := dial(t, g.addr)
	c.mustDo(t, "POST", "/", "warm")
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first line read by the old server", func() bool { return g.old.PendingBytes() > 0 })
	g.startNew(t)
	drained := g.drainInBackground(t)
	if _, err := io.WriteString(c, "Host: test\r\nContent-Length: 5\r\n\r\nsplit"); err != nil {
		t.Fatal(err)
	}
	resp, body, err := c.read()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("request split after its first line: %v %v %q", resp, err, body)
	}
	if v, _ := g.served.Load("split"); v != "A" || g.twice.Load() != 0 {
		t.Fatalf("split request served by %v (want A, once)", v)
	}
	<-drained
}

// TestStalledRequestDoesNotHoldTheDrain: a client that sent two bytes of a
// request and stopped is not waited for by the migration (it is drained
// as before: the idle grace, then Shutdown), so the drain ends without
// reaching its deadline.
func TestStalledRequestDoesNotHoldTheDrain(t *testing.T) {
	g := newGenerations(t, httpdrain.Options{IdleGrace: 100 * time.Millisecond})
	c := dial(t, g.addr)
	c.mustDo(t, "POST", "/", "warm")
	if _, err := io.WriteString(c, "PO"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the two bytes read by the old server", func() bool { return g.old.PendingBytes() > 0 })
	g.startNew(t)
	rep, err := g.old.Drain(ctxTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatalf("Drain: %v (%+v): the stalled request held the migration until the deadline", err, rep)
	}
}

// TestMigrationWithH2CEnabled: a server that also speaks HTTP/2 without
// TLS passes its idle HTTP/1.1 conns on like any other.
func TestMigrationWithH2CEnabled(t *testing.T) {
	g := newGenerationsWith(t, httpdrain.Options{IdleGrace: longGrace}, func(hs *http.Server) {
		hs.Protocols = new(http.Protocols)
		hs.Protocols.SetHTTP1(true)
		hs.Protocols.SetUnencryptedHTTP2(true)
	})
	var cs []*client
	for i := 0; i < 5; i++ {
		c := dial(t, g.addr)
		c.mustDo(t, "POST", "/", fmt.Sprintf("h2c-first-%d", i))
		cs = append(cs, c)
	}
	g.startNew(t)
	rep, err := g.old.Drain(ctxTimeout(t, testTimeout))
	checkClean(t, rep, err)
	if rep.Migrated != len(cs) {
		t.Fatalf("report %+v, want %d migrated", rep, len(cs))
	}
}

// TestNoMigrationWithoutSuccessor: when no listener can pass conns at the
// drain start (a plain stop), the drain is the one without migration: a
// response in flight says "Connection: close", nothing is offered.
func TestNoMigrationWithoutSuccessor(t *testing.T) {
	g := newGenerations(t, httpdrain.Options{IdleGrace: longGrace})
	g.pass.notReady.Store(true)
	c := dial(t, g.addr)
	c.mustDo(t, "POST", "/", "warm")
	if err := c.send("GET", "/slow", ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slow request to start", func() bool { return g.slowStarted.Load() })
	done := g.drainInBackground(t)
	close(g.release)
	resp, _, err := c.read()
	if err != nil || !resp.Close {
		t.Fatalf("response in flight during a drain without successor: %v, close %v; want Connection: close", err, resp != nil && resp.Close)
	}
	rep := <-done
	if rep.Migrated != 0 || rep.MigrationFailed != 0 || g.pass.calls.Load() != 0 {
		t.Fatalf("report %+v, %d MigrateConns calls: nothing should have been offered", rep, g.pass.calls.Load())
	}
}

var _ httpdrain.Migrator = (*passingListener)(nil)
