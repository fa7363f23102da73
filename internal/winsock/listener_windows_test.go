package winsock

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"github.com/baton-go/baton/internal/handlecount"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// Generous bounds: Wine is about 10x slower than Windows. Nothing asserts
// on timing; these only keep a broken build from hanging.
const bound = 20 * time.Second

func listenLoopback(t *testing.T) *Listener {
	t.Helper()
	l, err := Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// serveHTTP serves l with a handler answering body, until the test ends.
func serveHTTP(t *testing.T, l net.Listener, body string) {
	t.Helper()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				io.Copy(w, r.Body)
				return
			}
			io.WriteString(w, body)
		}),
		ReadHeaderTimeout: bound,
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		srv.Shutdown(ctx)
		select {
		case <-done:
		case <-ctx.Done():
			t.Error("http.Server.Serve did not return")
		}
	})
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	return string(b), err
}

func TestHTTP(t *testing.T) {
	l := listenLoopback(t)
	a, ok := l.Addr().(*net.TCPAddr)
	if !ok || a.Port == 0 || !a.IP.IsLoopback() {
		t.Fatalf("Addr() = %#v, want a loopback *net.TCPAddr with a port", l.Addr())
	}
	serveHTTP(t, l, "hello")
	url := "http://" + l.Addr().String() + "/"

	for _, keepAlive := range []bool{true, false} {
		c := &http.Client{Timeout: bound, Transport: &http.Transport{DisableKeepAlives: !keepAlive}}
		for i := 0; i < 10; i++ {
			if body, err := get(c, url); err != nil || body != "hello" {
				t.Fatalf("keep-alive %v, request %d: %q, %v", keepAlive, i, body, err)
			}
		}
		c.CloseIdleConnections()
	}

	// A large echo: many reads and writes through the runtime's IOCP.
	big := make([]byte, 4<<20)
	rand.Read(big)
	c := &http.Client{Timeout: bound}
	resp, err := c.Post(url, "application/octet-stream", bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("echo of %d bytes: got %d bytes, equal %v, %v", len(big), len(got), bytes.Equal(got, big), err)
	}
	c.CloseIdleConnections()
}

func acceptOne(t *testing.T, l *Listener) (server net.Conn, client *net.TCPConn) {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := l.Accept(); ch <- res{c, err} }()
	cc, err := net.DialTimeout("tcp", l.Addr().String(), bound)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r.c, cc.(*net.TCPConn)
	case <-time.After(bound):
		t.Fatal("Accept did not return")
	}
	panic("unreachable")
}

func TestConn(t *testing.T) {
	l := listenLoopback(t)
	sc, cc := acceptOne(t, l)
	if _, ok := sc.(*Conn); !ok {
		t.Fatalf("Accept returned %T, want *Conn", sc)
	}
	if sc.LocalAddr().String() != cc.RemoteAddr().String() || sc.RemoteAddr().String() != cc.LocalAddr().String() {
		t.Fatalf("server conn %v<-%v, client conn %v->%v", sc.LocalAddr(), sc.RemoteAddr(), cc.LocalAddr(), cc.RemoteAddr())
	}
	buf := make([]byte, 16)

	// A read deadline expires with a timeout error.
	sc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := sc.Read(buf)
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past the deadline: %v, want a timeout", err)
	}
	// Moving the deadline wakes a blocked Read.
	sc.SetReadDeadline(time.Time{})
	readErr := make(chan error, 1)
	go func() { _, err := sc.Read(buf); readErr <- err }()
	time.Sleep(50 * time.Millisecond)
	sc.SetReadDeadline(time.Now())
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked Read after SetReadDeadline(now): %v", err)
		}
	case <-time.After(bound):
		t.Fatal("SetReadDeadline did not wake a blocked Read")
	}
	// A write deadline in the past fails the write.
	sc.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := sc.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write past the deadline: %v", err)
	}
	sc.SetDeadline(time.Now().Add(bound))

	// Half-close in both directions.
	cc.SetDeadline(time.Now().Add(bound))
	cc.Write([]byte("ping"))
	cc.CloseWrite()
	if b, err := io.ReadAll(sc); err != nil || string(b) != "ping" {
		t.Fatalf("server read %q, %v; want ping then EOF", b, err)
	}
	if _, err := sc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if err := sc.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(cc); err != nil || string(b) != "pong" {
		t.Fatalf("client read %q, %v; want pong then EOF", b, err)
	}

	// Close wakes a blocked Read; afterwards everything reports net.ErrClosed.
	sc.SetDeadline(time.Time{})
	sc2, _ := acceptOne(t, l)
	go func() { _, err := sc2.Read(buf); readErr <- err }()
	time.Sleep(50 * time.Millisecond)
	if err := sc2.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read blocked during Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(bound):
		t.Fatal("Close did not wake a blocked Read")
	}
	if err := sc.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Close":      sc.Close(),
		"CloseWrite": sc.(*Conn).CloseWrite(),
		"Read":       func() error { _, err := sc.Read(buf); return err }(),
		"Write":      func() error { _, err := sc.Write(buf); return err }(),
	} {
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close: %v, want net.ErrClosed", name, err)
		}
	}
}

func TestCloseWakesAccept(t *testing.T) {
	l, err := Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	acceptErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if c != nil {
			c.Close()
			err = errors.New("Accept returned a connection nobody made")
		}
		acceptErr <- err
	}()
	time.Sleep(100 * time.Millisecond) // most likely blocked in Accept by now; correct either way
	closeErr := make(chan error, 1)
	go func() { closeErr <- l.Close() }()
	for _, ch := range []chan error{closeErr, acceptErr} {
		select {
		case err := <-ch:
			if ch == closeErr && err != nil {
				t.Fatalf("Close: %v", err)
			}
			if ch == acceptErr && !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Accept woken by Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(bound):
			t.Fatal("Close or Accept did not return")
		}
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
	// The socket is really closed: the port can be bound again.
	l2, err := Listen("tcp4", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	// ... and SO_EXCLUSIVEADDRUSE keeps anybody else off it meanwhile.
	if l3, err := net.Listen("tcp4", addr); err == nil {
		l3.Close()
		t.Errorf("net.Listen on %s succeeded while our Listener holds it", addr)
	}
	l2.Close()
}

func TestListenNetworks(t *testing.T) {
	if _, err := Listen("udp", "127.0.0.1:0"); err == nil {
		t.Error(`Listen("udp") succeeded`)
	}
	if _, err := Listen("tcp4", "[::1]:0"); err == nil {
		t.Error(`Listen("tcp4", "[::1]:0") succeeded`)
	}
	l, err := Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, err = Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	defer l.Close()
	serveHTTP(t, l, "six")
	c := &http.Client{Timeout: bound, Transport: &http.Transport{DisableKeepAlives: true}}
	if body, err := get(c, "http://"+l.Addr().String()+"/"); err != nil || body != "six" {
		t.Fatalf("over IPv6: %q, %v", body, err)
	}
}

func handleCount(t *testing.T) int {
	t.Helper()
	n, err := handlecount.Count()
	if err != nil {
		t.Fatalf("counting handles: %v", err)
	}
	return n
}

func TestHandleCountFlat(t *testing.T) {
	l := listenLoopback(t)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("x"))
			c.Close()
		}
	}()
	conns := func(n int) {
		for i := 0; i < n; i++ {
			c, err := net.DialTimeout("tcp", l.Addr().String(), bound)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(bound))
			b, err := io.ReadAll(c)
			c.Close()
			if err != nil || string(b) != "x" {
				t.Fatalf("conn %d: %q, %v", i, b, err)
			}
		}
	}
	// Listeners whose Accept is woken by Close: the cancel path.
	listeners := func(n int) {
		for i := 0; i < n; i++ {
			l, err := Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { l.Accept(); close(done) }()
			runtime.Gosched()
			l.Close()
			<-done
		}
	}
	measure := func() int {
		runtime.GC()
		return handleCount(t)
	}

	conns(50)
	listeners(10)
	before := measure()
	const n = 1000
	conns(n)
	afterConns := measure()
	listeners(n / 5)
	after := measure()
	t.Logf("handles: %d before, %d after %d conns, %d after %d listeners", before, afterConns, n, after, n/5)
	if before == 0 {
		t.Fatal("GetProcessHandleCount reports 0 handles: cannot measure")
	}
	// Slack for runtime threads; a leak of even one handle per connection
	// or listener would show as hundreds.
	if afterConns > before+30 || after > before+30 {
		t.Fatalf("handle count grew: %d before, %d after %d conns, %d after %d listeners", before, afterConns, n, after, n/5)
	}
}

func TestGarbageProtocolInfo(t *testing.T) {
	l := listenLoopback(t)
	info, err := Duplicate(l.Socket(), uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if len(info) != ProtocolInfoSize || ProtocolInfoSize != 628 {
		t.Fatalf("Duplicate returned %d bytes, ProtocolInfoSize %d; want 628", len(info), ProtocolInfoSize)
	}
	notTCP := bytes.Clone(info)
	(*windows.WSAProtocolInfo)(unsafe.Pointer(&notTCP[0])).AddressFamily = 99
	random := make([]byte, ProtocolInfoSize)
	rand.Read(random)
	// Random bytes behind a plausible TCP header: WSASocket may build a
	// fresh socket from them, which must not pass for a listener.
	plausible := bytes.Clone(random)
	p := (*windows.WSAProtocolInfo)(unsafe.Pointer(&plausible[0]))
	p.AddressFamily, p.SocketType, p.Protocol = windows.AF_INET, windows.SOCK_STREAM, windows.IPPROTO_TCP
	p.ServiceFlags3, p.ServiceFlags4 = 0, 0 // Wine reads a handle value from these

	for _, tc := range []struct {
		name string
		info []byte
		want string
	}{
		{"nil", nil, "is 0 bytes, want 628"},
		{"short", info[:10], "is 10 bytes, want 628"},
		{"long", append(bytes.Clone(info), 0), "is 629 bytes, want 628"},
		{"zeros", make([]byte, ProtocolInfoSize), "does not describe the expected socket"},
		{"not TCP", notTCP, "does not describe the expected socket"},
		{"random", random, "winsock: "},
		{"plausible", plausible, "winsock: "},
	} {
		nl, err := ListenerFromProtocolInfo(tc.info)
		if err == nil {
			nl.Close()
			t.Errorf("%s: ListenerFromProtocolInfo succeeded", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q, want it to contain %q", tc.name, err, tc.want)
		}
		t.Logf("%s: %v", tc.name, err)
	}

	// The genuine bytes still work (duplicated to this very process).
	nl, err := ListenerFromProtocolInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	if nl.Addr().String() != l.Addr().String() || nl.Socket() == l.Socket() {
		t.Fatalf("rebuilt listener on %v (socket %v), original on %v (socket %v)", nl.Addr(), nl.Socket(), l.Addr(), l.Socket())
	}
	l.Close() // the copy keeps serving
	serveHTTP(t, nl, "copy")
	c := &http.Client{Timeout: bound, Transport: &http.Transport{DisableKeepAlives: true}}
	if body, err := get(c, "http://"+nl.Addr().String()+"/"); err != nil || body != "copy" {
		t.Fatalf("rebuilt listener: %q, %v", body, err)
	}
}

// load makes requests over fresh connections from a few goroutines until
// stopped, counting answers per body and failures.
type load struct {
	url    string
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	counts map[string]int // body -> answers
	late   map[string]int // body -> answers to requests started after the last mark
	epoch  int            // number of marks
	fails  []error
	once   sync.Once
}

func startLoad(url string, workers int) *load {
	ld := &load{url: url, stop: make(chan struct{}), counts: map[string]int{}, late: map[string]int{}}
	for range workers {
		ld.wg.Go(func() {
			c := &http.Client{Timeout: bound, Transport: &http.Transport{DisableKeepAlives: true}}
			for {
				select {
				case <-ld.stop:
					return
				default:
				}
				ld.mu.Lock()
				epoch := ld.epoch
				ld.mu.Unlock()
				body, err := get(c, ld.url)
				ld.mu.Lock()
				if err != nil {
					ld.fails = append(ld.fails, err)
				} else {
					ld.counts[body]++
					if epoch > 0 && epoch == ld.epoch {
						ld.late[body]++
					}
				}
				ld.mu.Unlock()
			}
		})
	}
	return ld
}

func (ld *load) answered() int {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.answeredLocked()
}

func (ld *load) answeredLocked() int {
	n := len(ld.fails)
	for _, c := range ld.counts {
		n += c
	}
	return n
}

// mark starts counting late answers: from requests started from now on.
func (ld *load) mark() {
	ld.mu.Lock()
	ld.epoch++
	clear(ld.late)
	ld.mu.Unlock()
}

// waitFor polls cond (called with ld.mu held) until it holds or the deadline.
func (ld *load) waitFor(deadline time.Time, cond func() bool) bool {
	for {
		ld.mu.Lock()
		ok := cond()
		ld.mu.Unlock()
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// finish stops the clients and reports failed requests; once.
func (ld *load) finish(t *testing.T) {
	t.Helper()
	ld.once.Do(func() { ld.stopAndReport(t) })
}

func (ld *load) stopAndReport(t *testing.T) {
	t.Helper()
	close(ld.stop)
	done := make(chan struct{})
	go func() { ld.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(bound):
		t.Fatal("load clients did not stop")
	}
	ld.mu.Lock()
	defer ld.mu.Unlock()
	for i, err := range ld.fails {
		if i == 5 {
			t.Errorf("... %d failures in all", len(ld.fails))
			break
		}
		t.Errorf("failed request: %v", err)
	}
}

// TestHandoverInProcess hands the socket over between listeners of the same
// process (Duplicate to our own pid) twenty times under load: it exercises
// Close racing with connections while the other copy keeps accepting.
func TestHandoverInProcess(t *testing.T) {
	deadline := time.Now().Add(25 * time.Second)
	cur := listenLoopback(t)
	serveHTTP(t, cur, "gen0")
	ld := startLoad("http://"+cur.Addr().String()+"/", 3)
	defer ld.finish(t)

	const gens = 20
	for gen := 1; gen <= gens; gen++ {
		info, err := Duplicate(cur.Socket(), uint32(os.Getpid()))
		if err != nil {
			t.Fatal(err)
		}
		next, err := ListenerFromProtocolInfo(info)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { next.Close() })
		name := fmt.Sprintf("gen%d", gen)
		serveHTTP(t, next, name)
		// Let both copies serve for a moment, then close the old one.
		before := ld.answered()
		ld.waitFor(deadline, func() bool { return ld.answeredLocked() >= before+10 })
		if err := cur.Close(); err != nil {
			t.Fatal(err)
		}
		ld.mark()
		if !ld.waitFor(deadline, func() bool { return ld.late[name] >= 10 || len(ld.fails) > 0 }) {
			t.Fatalf("generation %d: too few answers after the handover", gen)
		}
		ld.mu.Lock()
		for body, n := range ld.late {
			if body != name {
				t.Errorf("%d answers from closed %s to requests started after its Close", n, body)
			}
		}
		ld.mu.Unlock()
		cur = next
	}
	ld.mu.Lock()
	defer ld.mu.Unlock()
	t.Logf("answers: %v", ld.counts)
}

// TestNoCompletionPackets checks the low bit of OVERLAPPED.hEvent: even if
// the socket is associated with a completion port (as every duplicate would
// be if any copy were, possibly in another process, where a Go runtime would
// crash on a packet it did not expect), accepts must queue nothing to it.
func TestNoCompletionPackets(t *testing.T) {
	l := listenLoopback(t)
	port, err := windows.CreateIoCompletionPort(l.Socket(), 0, 0x5eed, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer windows.CloseHandle(port)
	info, err := Duplicate(l.Socket(), uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	l2, err := ListenerFromProtocolInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	for _, ln := range []*Listener{l, l2, l, l2} {
		sc, _ := acceptOne(t, ln)
		sc.Close()
	}
	var n uint32
	var key uintptr
	var ov *windows.Overlapped
	err = windows.GetQueuedCompletionStatus(port, &n, &key, &ov, 0)
	if err != windows.WAIT_TIMEOUT || ov != nil {
		t.Fatalf("completion port got a packet (key %#x, overlapped %p, %v); want none", key, ov, err)
	}
}
