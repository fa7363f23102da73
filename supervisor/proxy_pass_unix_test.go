//go:build unix

package supervisor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/proxy"
)

// passGen is the generation's end of a real supervisor link, served in
// this process: the connections passed to it are answered "gen" (as if
// its listener had accepted them), up to take per batch (-1: all); the
// rest it refuses, as the library does with a listener it does not have.
type passGen struct {
	mu      sync.Mutex
	take    int
	batches []int         // connections per LinkConns exchange
	hold    chan struct{} // if set, the first batch waits for it to close
	held    chan struct{} // closed when the first batch waits
	served  sync.WaitGroup
}

func (pg *passGen) takeConns(network, addr string, files []*os.File) int {
	pg.mu.Lock()
	first := len(pg.batches) == 0
	pg.batches = append(pg.batches, len(files))
	take, hold := pg.take, pg.hold
	pg.mu.Unlock()
	if first && hold != nil {
		close(pg.held)
		<-hold
	}
	if take < 0 || take > len(files) {
		take = len(files)
	}
	for i, f := range files {
		if i < take {
			if c, err := handoff.FileConn(f); err == nil {
				pg.served.Add(1)
				go func() {
					defer pg.served.Done()
					defer c.Close()
					_, _ = io.WriteString(c, "gen")
				}()
			}
		}
		f.Close()
	}
	return take
}

func (pg *passGen) batchSizes() []int {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	return append([]int(nil), pg.batches...)
}

// linkedGen returns generation 1 with a link whose other end pg serves.
func linkedGen(t *testing.T, pg *passGen) *generation {
	t.Helper()
	dir, err := os.MkdirTemp("", "bpass")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, path, err := handoff.ListenLink(filepath.Join(dir, "link"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv(handoff.EnvLink, path)
	type dialed struct {
		l   *handoff.LinkConn
		err error
	}
	genEnd := make(chan dialed, 1)
	go func() {
		l, h, err := handoff.DialLink(10*time.Second, 1<<20)
		h.Close()
		genEnd <- dialed{l, err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sup, _, err := handoff.AcceptLink(ctx, ln)
	if err != nil {
		t.Fatal(err)
	}
	if err := sup.Give(&handoff.Handed{Msg: handoff.Handoff{Conns: sup.PassesConns()}}); err != nil {
		t.Fatal(err)
	}
	d := <-genEnd
	if d.err != nil {
		t.Fatal(d.err)
	}
	if !sup.PassesConns() {
		t.Skip("this platform's links do not pass connections")
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = d.l.Serve(nil, func() {}, &handoff.LinkConnsHooks{Take: pg.takeConns})
	}()
	t.Cleanup(func() {
		sup.Close()
		d.l.Close()
		<-served
		pg.served.Wait()
	})
	g := &generation{exited: make(chan struct{})}
	g.n, g.pid, g.link = 1, os.Getpid(), sup
	return g
}

// passFront is a tcp front with one public socket (a TCPProxy on
// loopback) in front of generation g, whose relay target answers "relay".
func passFront(t *testing.T, g *generation) (*front, *proxy.TCPProxy, string) {
	t.Helper()
	s := &Supervisor{log: slog.New(slog.DiscardHandler)}
	s.cfg.Listen = []ListenSpec{{Network: "tcp", Addr: "127.0.0.1:8080", Name: "web"}}
	f := &front{s: s, mode: ProxyTCP, gens: map[int]*backendAddrs{}, weight: map[int]int{}}
	relay, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var relayed sync.WaitGroup
	relayed.Add(1)
	go func() {
		defer relayed.Done()
		for {
			c, err := relay.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "relay")
			c.Close()
		}
	}()
	set := proxy.NewSet(proxy.SetOptions{})
	if err := set.SetBackends([]proxy.Backend{{ID: backendID(g.n), Network: "tcp", Addr: relay.Addr().String(), Weight: 100}}); err != nil {
		t.Fatal(err)
	}
	px := proxy.NewTCP(set, proxy.TCPOptions{Logger: s.log, Pass: f.passHook(0)})
	pub, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go px.Serve(pub)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = px.Shutdown(ctx)
		relay.Close()
		relayed.Wait()
	})
	f.sets = []*proxy.Set{set}
	f.addPasser(g)
	return f, px, pub.Addr().String()
}

// clients dials addr n times at once and returns what each read.
func clients(addr string, n int) map[string]int {
	got := make(chan string, n)
	for range n {
		go func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				got <- err.Error()
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			b, err := io.ReadAll(c)
			if err != nil {
				got <- err.Error()
				return
			}
			got <- string(b)
		}()
	}
	out := map[string]int{}
	for range n {
		out[<-got]++
	}
	return out
}

// Connections that arrive while a pass is under way wait for the next
// one and go together: one exchange for all of them, not one each.
func TestPassBatches(t *testing.T) {
	pg := &passGen{take: -1, hold: make(chan struct{}), held: make(chan struct{})}
	g := linkedGen(t, pg)
	f, px, addr := passFront(t, g)
	p := f.passer(backendID(1))
	const n = 60
	done := make(chan map[string]int, 1)
	go func() { done <- clients(addr, n) }()
	<-pg.held
	first := pg.batchSizes()[0]
	deadline := time.Now().Add(30 * time.Second)
	for {
		p.mu.Lock()
		queued := len(p.queue)
		p.mu.Unlock()
		if queued == n-first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections queued behind the first pass of %d; want %d", queued, first, n-first)
		}
		time.Sleep(time.Millisecond)
	}
	close(pg.hold)
	got := <-done
	if got["gen"] != n {
		t.Fatalf("answers %v; want all %d from the generation", got, n)
	}
	if b := pg.batchSizes(); len(b) != 2 || b[1] != n-first {
		t.Errorf("batches %v; want %d then the %d that waited", b, first, n-first)
	}
	if st := f.stats()[backendID(1)]; st.Passed != n || px.Failed() != 0 {
		t.Errorf("passed %d, failed %d", st.Passed, px.Failed())
	}
}

// What the generation does not take is relayed to it (never dropped,
// never answered twice), and passing stops for it; once retired, its
// connections are refused and go elsewhere.
func TestPassRefusedThenRetired(t *testing.T) {
	pg := &passGen{take: 0}
	g := linkedGen(t, pg)
	f, px, addr := passFront(t, g)
	if got := clients(addr, 20); got["relay"] != 20 {
		t.Fatalf("a generation that takes none: answers %v; want all 20 relayed", got)
	}
	if b := pg.batchSizes(); len(b) == 0 {
		t.Fatal("nothing was offered to the generation")
	}
	offered := len(pg.batchSizes())
	if got := clients(addr, 5); got["relay"] != 5 || len(pg.batchSizes()) != offered {
		t.Errorf("after a refusal: answers %v, %d more passes offered; want relayed, none offered", got, len(pg.batchSizes())-offered)
	}
	if px.Failed() != 0 {
		t.Errorf("failed %d", px.Failed())
	}

	// A fresh passer for the same generation, then retired: refused.
	pg.mu.Lock()
	pg.take = -1
	pg.mu.Unlock()
	f.mu.Lock()
	delete(f.passers, backendID(1))
	f.mu.Unlock()
	f.addPasser(g)
	if got := clients(addr, 5); got["gen"] != 5 {
		t.Fatalf("answers %v; want all 5 from the generation", got)
	}
	f.passer(backendID(1)).refuse(context.Background())
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	if r := f.passHook(0)(context.Background(), backendID(1), c1); r != proxy.PassRefused {
		t.Errorf("a retired generation's pass: %v, want PassRefused", r)
	}
	if got := clients(addr, 3); got[""] != 3 || px.Failed() != 3 {
		t.Errorf("only a retired generation: answers %v, failed %d; want 3 closed, failed", got, px.Failed())
	}
}

// A generation that hangs in a pass holds the proxy's Shutdown no longer
// than Shutdown's own deadline (not the pass timeout, 15 s, past baton
// stop's --drain-timeout): the waiting session ends as lost and the
// proxy closes its copy; the generation, if it wakes, serves the client
// with the socket it was passed.
func TestPassHungGenerationShutdown(t *testing.T) {
	pg := &passGen{take: -1, hold: make(chan struct{}), held: make(chan struct{})}
	g := linkedGen(t, pg)
	_, px, addr := passFront(t, g)
	released := false
	release := func() {
		if !released {
			released = true
			close(pg.hold)
		}
	}
	defer release()
	done := make(chan map[string]int, 1)
	go func() { done <- clients(addr, 1) }()
	<-pg.held
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- px.Shutdown(ctx) }()
	select {
	case err := <-shut:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown with a hung pass: %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown still waits for a hung pass 10 s after its deadline")
	}
	if px.Failed() != 1 {
		t.Errorf("failed %d, want the connection waiting for the hung pass counted", px.Failed())
	}
	release()
	if got := <-done; got["gen"] != 1 {
		t.Errorf("the generation woke with the socket: client read %v, want its answer", got)
	}
}
