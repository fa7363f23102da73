package winsock

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/baton-go/baton/internal/wine"
	"golang.org/x/sys/windows"
)

func listenPacketLoopback(t *testing.T) *PacketConn {
	t.Helper()
	c, err := ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// serveUDP answers each datagram with "<datagram> <body>" (or echoes it if
// body is empty) until ReadFrom fails; the returned channel then receives
// that error.
func serveUDP(c net.PacketConn, body string) <-chan error {
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, maxIOBuf)
		for {
			n, addr, err := c.ReadFrom(buf)
			if err != nil {
				done <- err
				return
			}
			reply := buf[:n]
			if body != "" {
				reply = append(reply, ' ')
				reply = append(reply, body...)
			}
			c.WriteTo(reply, addr)
		}
	}()
	return done
}

func waitErr(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(bound):
		t.Fatalf("%s did not return", what)
	}
	panic("unreachable")
}

// exchange sends b from cl to addr and returns the answer.
func exchange(t *testing.T, cl net.PacketConn, addr net.Addr, b []byte) []byte {
	t.Helper()
	if n, err := cl.WriteTo(b, addr); err != nil || n != len(b) {
		t.Fatalf("WriteTo %d bytes: %d, %v", len(b), n, err)
	}
	cl.SetReadDeadline(time.Now().Add(bound))
	buf := make([]byte, maxIOBuf)
	n, from, err := cl.ReadFrom(buf)
	if err != nil {
		t.Fatalf("ReadFrom after sending %d bytes: %v", len(b), err)
	}
	if from.String() != addr.String() {
		t.Fatalf("answer from %v, want %v", from, addr)
	}
	return buf[:n]
}

func TestPacketEcho(t *testing.T) {
	srv := listenPacketLoopback(t)
	a, ok := srv.LocalAddr().(*net.UDPAddr)
	if !ok || a.Port == 0 || !a.IP.IsLoopback() {
		t.Fatalf("LocalAddr() = %#v, want a loopback *net.UDPAddr with a port", srv.LocalAddr())
	}
	served := serveUDP(srv, "")
	sizes := []int{0, 1, 100, 1472, 9000, 65507}
	roundTrips := func(t *testing.T, cl net.PacketConn) {
		for i := 0; i < 200; i++ {
			b := make([]byte, sizes[i%len(sizes)])
			rand.Read(b)
			if got := exchange(t, cl, srv.LocalAddr(), b); !bytes.Equal(got, b) {
				t.Fatalf("round trip %d: sent %d bytes, got %d back (equal %v)", i, len(b), len(got), bytes.Equal(got, b))
			}
		}
	}
	t.Run("own client", func(t *testing.T) {
		roundTrips(t, listenPacketLoopback(t))
	})
	t.Run("std client", func(t *testing.T) {
		cl, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			if v, ok := wine.Version(); ok {
				// Go issues SIO_UDP_NETRESET on every UDP socket; Wine
				// answers WSAEOPNOTSUPP (PacketConn ignores that).
				t.Skipf("Go's own UDP sockets cannot be opened under Wine %s: %v", v, err)
			}
			t.Fatal(err)
		}
		defer cl.Close()
		roundTrips(t, cl)
	})

	// A datagram larger than the reader's buffer.
	cl := listenPacketLoopback(t)
	if _, err := cl.WriteTo(make([]byte, 100), cl.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	cl.SetReadDeadline(time.Now().Add(bound))
	n, from, err := cl.ReadFrom(make([]byte, 10))
	t.Logf("100 bytes read into 10: %d, %v, %v", n, from, err)
	if err == nil && n > 10 {
		t.Fatalf("ReadFrom returned %d bytes into a 10-byte buffer", n)
	}
	if err != nil && !errors.Is(err, windows.WSAEMSGSIZE) {
		t.Fatalf("ReadFrom of a datagram larger than the buffer: %v, want WSAEMSGSIZE or a truncated read", err)
	}

	srv.Close()
	if err := waitErr(t, served, "the echo server"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("server ended with %v, want net.ErrClosed", err)
	}
}

// TestPacketConcurrentReadWrite checks that a WriteTo does not wait for a
// blocked ReadFrom on the same conn: the conn sends to itself.
func TestPacketConcurrentReadWrite(t *testing.T) {
	c := listenPacketLoopback(t)
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 64)
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	time.Sleep(100 * time.Millisecond) // most likely blocked in ReadFrom by now
	writeErr := make(chan error, 1)
	go func() { _, err := c.WriteTo([]byte("self"), c.LocalAddr()); writeErr <- err }()
	if err := waitErr(t, writeErr, "WriteTo during a blocked ReadFrom"); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "self" {
			t.Fatalf("ReadFrom got %q, want self", s)
		}
	case <-time.After(bound):
		t.Fatal("ReadFrom did not get the datagram")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

func TestPacketDeadlines(t *testing.T) {
	c := listenPacketLoopback(t)
	buf := make([]byte, 64)
	read := func() <-chan error {
		ch := make(chan error, 1)
		go func() { _, _, err := c.ReadFrom(buf); ch <- err }()
		return ch
	}

	// A read deadline expires with a timeout error, not early.
	start := time.Now()
	c.SetReadDeadline(start.Add(50 * time.Millisecond))
	if _, _, err := c.ReadFrom(buf); !isTimeout(err) {
		t.Fatalf("ReadFrom past the deadline: %v, want a timeout", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("ReadFrom timed out after %v, before its 50ms deadline", d)
	}
	// Past the deadline, ReadFrom fails at once.
	if _, _, err := c.ReadFrom(buf); !isTimeout(err) {
		t.Fatalf("ReadFrom after the deadline: %v, want a timeout", err)
	}

	// SetReadDeadline(now) from another goroutine wakes a blocked ReadFrom.
	c.SetReadDeadline(time.Time{})
	ch := read()
	time.Sleep(100 * time.Millisecond)
	c.SetReadDeadline(time.Now())
	if err := waitErr(t, ch, "ReadFrom after SetReadDeadline(now)"); !isTimeout(err) {
		t.Fatalf("blocked ReadFrom after SetReadDeadline(now): %v, want a timeout", err)
	}

	// Moving a distant deadline closer re-arms the wait.
	c.SetReadDeadline(time.Now().Add(time.Hour))
	ch = read()
	time.Sleep(100 * time.Millisecond)
	start = time.Now()
	c.SetReadDeadline(start.Add(100 * time.Millisecond))
	if err := waitErr(t, ch, "ReadFrom after moving the deadline closer"); !isTimeout(err) {
		t.Fatalf("ReadFrom after moving the deadline closer: %v, want a timeout", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("ReadFrom timed out after %v, before its 100ms deadline", d)
	}

	// Moving the deadline away keeps a blocked ReadFrom waiting, and a
	// datagram then arrives.
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	ch = read()
	time.Sleep(50 * time.Millisecond)
	c.SetReadDeadline(time.Time{})
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-ch:
		t.Fatalf("ReadFrom returned %v after its deadline was cleared", err)
	default:
	}
	if _, err := c.WriteTo([]byte("late"), c.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, ch, "ReadFrom of a datagram"); err != nil {
		t.Fatalf("ReadFrom after clearing the deadline: %v", err)
	}

	// A write deadline in the past fails WriteTo; clearing it works again.
	c.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := c.WriteTo([]byte("x"), c.LocalAddr()); !isTimeout(err) {
		t.Fatalf("WriteTo past the deadline: %v, want a timeout", err)
	}
	// SetDeadline sets both.
	c.SetDeadline(time.Now().Add(-time.Second))
	if _, _, err := c.ReadFrom(buf); !isTimeout(err) {
		t.Fatalf("ReadFrom after SetDeadline(past): %v, want a timeout", err)
	}
	c.SetDeadline(time.Time{})
	if got := exchange(t, c, c.LocalAddr(), []byte("again")); string(got) != "again" {
		t.Fatalf("got %q after clearing deadlines", got)
	}
}

func TestPacketClose(t *testing.T) {
	c, err := ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	readErr := make(chan error, 1)
	go func() { _, _, err := c.ReadFrom(make([]byte, 64)); readErr <- err }()
	time.Sleep(100 * time.Millisecond) // most likely blocked in ReadFrom by now; correct either way
	closeErr := make(chan error, 1)
	go func() { closeErr <- c.Close() }()
	if err := waitErr(t, closeErr, "Close"); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := waitErr(t, readErr, "ReadFrom during Close"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom woken by Close: %v, want net.ErrClosed", err)
	}
	for name, err := range map[string]error{
		"Close":            c.Close(),
		"ReadFrom":         func() error { _, _, err := c.ReadFrom(make([]byte, 8)); return err }(),
		"WriteTo":          func() error { _, err := c.WriteTo([]byte("x"), c.LocalAddr()); return err }(),
		"SetDeadline":      c.SetDeadline(time.Now()),
		"SetReadDeadline":  c.SetReadDeadline(time.Now()),
		"SetWriteDeadline": c.SetWriteDeadline(time.Now()),
	} {
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close: %v, want net.ErrClosed", name, err)
		}
	}
	// The socket is really closed: the port can be bound again ...
	c2, err := ListenPacket("udp4", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	defer c2.Close()
	// ... and SO_EXCLUSIVEADDRUSE keeps anybody else off it meanwhile.
	if c3, err := ListenPacket("udp4", addr); err == nil {
		c3.Close()
		t.Errorf("a second ListenPacket on %s succeeded", addr)
	}
}

// TestPacketConnReset: a datagram sent to a closed port must not make a
// later ReadFrom fail (SIO_UDP_CONNRESET, or ReadFrom skipping the report).
func TestPacketConnReset(t *testing.T) {
	c := listenPacketLoopback(t)
	for _, ioctl := range []struct {
		name string
		code uint32
	}{{"SIO_UDP_CONNRESET", windows.SIO_UDP_CONNRESET}, {"SIO_UDP_NETRESET", windows.SIO_UDP_NETRESET}} {
		var flag, ret uint32
		err := windows.WSAIoctl(c.Socket(), ioctl.code, (*byte)(unsafe.Pointer(&flag)), uint32(unsafe.Sizeof(flag)), nil, 0, &ret, nil, 0)
		t.Logf("%s false: %v", ioctl.name, err)
	}
	gone, err := ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	goneAddr := gone.LocalAddr()
	gone.Close()
	for i := 0; i < 3; i++ {
		if _, err := c.WriteTo([]byte("nobody"), goneAddr); err != nil {
			t.Logf("WriteTo a closed port: %v", err)
		}
	}
	time.Sleep(50 * time.Millisecond) // let any ICMP report arrive
	peer := listenPacketLoopback(t)
	if _, err := peer.WriteTo([]byte("hello"), c.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(bound))
	buf := make([]byte, 64)
	n, from, err := c.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello" || from.String() != peer.LocalAddr().String() {
		t.Fatalf("ReadFrom after sending to a closed port: %q from %v, %v; want hello from %v", buf[:n], from, err, peer.LocalAddr())
	}
}

func TestListenPacketNetworks(t *testing.T) {
	for _, tc := range [][2]string{{"tcp", "127.0.0.1:0"}, {"udp4", "[::1]:0"}, {"udp6", "127.0.0.1:0"}, {"udp", "127.0.0.1:99999"}} {
		if c, err := ListenPacket(tc[0], tc[1]); err == nil {
			c.Close()
			t.Errorf("ListenPacket(%q, %q) succeeded", tc[0], tc[1])
		} else {
			t.Logf("ListenPacket(%q, %q): %v", tc[0], tc[1], err)
		}
	}
	c, err := ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if c.family != windows.AF_INET {
		t.Errorf(`ListenPacket("udp", "127.0.0.1:0") made a family %d socket`, c.family)
	}
	c.Close()

	// "udp" on the wildcard address: dual stack if possible; an IPv4
	// client is answered either way.
	wc, err := ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	serveUDP(wc, "dual")
	cl := listenPacketLoopback(t)
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: wc.LocalAddr().(*net.UDPAddr).Port}
	if got := exchange(t, cl, to, []byte("v4")); string(got) != "v4 dual" {
		t.Fatalf("over IPv4 to %v (family %d): %q", wc.LocalAddr(), wc.family, got)
	}
	t.Logf("wildcard udp: %v, family %d", wc.LocalAddr(), wc.family)

	c6, err := ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	defer c6.Close()
	serveUDP(c6, "six")
	cl6, err := ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer cl6.Close()
	if got := exchange(t, cl6, c6.LocalAddr(), []byte("v6")); string(got) != "v6 six" {
		t.Fatalf("over IPv6: %q", got)
	}
	if _, err := cl6.WriteTo([]byte("x"), to); err == nil {
		t.Log("IPv6-only socket sent to an IPv4 address (mapped)")
	}
}

func TestPacketHandleCountFlat(t *testing.T) {
	srv := listenPacketLoopback(t)
	serveUDP(srv, "")
	cl := listenPacketLoopback(t)
	datagrams := func(n int) {
		for i := 0; i < n; i++ {
			if got := exchange(t, cl, srv.LocalAddr(), []byte("x")); string(got) != "x" {
				t.Fatalf("datagram %d: %q", i, got)
			}
		}
	}
	buf := make([]byte, 8)
	// Reads cancelled by a deadline.
	timeouts := func(n int) {
		for i := 0; i < n; i++ {
			cl.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, _, err := cl.ReadFrom(buf); !isTimeout(err) {
				t.Fatalf("ReadFrom: %v, want a timeout", err)
			}
		}
	}
	// Conns whose ReadFrom is woken by Close.
	conns := func(n int) {
		for i := 0; i < n; i++ {
			c, err := ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { c.ReadFrom(make([]byte, 8)); close(done) }()
			runtime.Gosched()
			c.Close()
			<-done
		}
	}
	measure := func() int {
		runtime.GC()
		return handleCount(t)
	}

	datagrams(50)
	timeouts(10)
	conns(10)
	before := measure()
	const n = 2000
	datagrams(n)
	afterDatagrams := measure()
	timeouts(n / 10)
	afterTimeouts := measure()
	conns(n / 10)
	after := measure()
	t.Logf("handles: %d before, %d after %d datagrams, %d after %d timeouts, %d after %d conns",
		before, afterDatagrams, n, afterTimeouts, n/10, after, n/10)
	if before == 0 {
		t.Fatal("the handle count is 0: cannot measure")
	}
	if afterDatagrams > before+30 || afterTimeouts > before+30 || after > before+30 {
		t.Fatalf("handle count grew: %d before, %d after datagrams, %d after timeouts, %d after conns",
			before, afterDatagrams, afterTimeouts, after)
	}
}

// TestPacketNoCompletionPackets checks the low bit of OVERLAPPED.hEvent: even
// if the socket is associated with a completion port (as it would be if any
// copy were, possibly in another process, where a Go runtime would crash on
// a packet it did not expect), reads, writes and cancellations must queue
// nothing to it. A raw send without the bit shows that the check can see
// packets.
func TestPacketNoCompletionPackets(t *testing.T) {
	srv := listenPacketLoopback(t)
	port, err := windows.CreateIoCompletionPort(srv.Socket(), 0, 0x5eed, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer windows.CloseHandle(port)
	info, err := Duplicate(srv.Socket(), uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	dup, err := PacketConnFromProtocolInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	defer dup.Close()
	cl := listenPacketLoopback(t)
	for i, c := range []*PacketConn{srv, dup, srv, dup} {
		done := serveUDP(c, "")
		if got := exchange(t, cl, c.LocalAddr(), []byte{byte(i)}); !bytes.Equal(got, []byte{byte(i)}) {
			t.Fatalf("exchange %d: %q", i, got)
		}
		c.SetReadDeadline(time.Now()) // cancels the next ReadFrom
		if err := waitErr(t, done, "the server"); !isTimeout(err) {
			t.Fatalf("server %d: %v, want a timeout", i, err)
		}
		c.SetReadDeadline(time.Time{})
	}
	var n uint32
	var key uintptr
	var ov *windows.Overlapped
	err = windows.GetQueuedCompletionStatus(port, &n, &key, &ov, 0)
	if err != windows.WAIT_TIMEOUT || ov != nil {
		t.Fatalf("completion port got a packet (key %#x, overlapped %p, %v); want none", key, ov, err)
	}

	// The control: an overlapped send whose hEvent lacks the low bit.
	op := new(ioOp)
	op.buf = []byte("control")
	op.wsabuf = windows.WSABuf{Len: uint32(len(op.buf)), Buf: &op.buf[0]}
	tolen, err := rawFromUDPAddr(&op.rsa, windows.AF_INET, cl.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	err = windows.WSASendTo(srv.Socket(), &op.wsabuf, 1, &op.qty, 0, &op.rsa, tolen, &op.ov, nil)
	if err != nil && err != windows.ERROR_IO_PENDING {
		t.Fatal(err)
	}
	err = windows.GetQueuedCompletionStatus(port, &n, &key, &ov, uint32(bound/time.Millisecond))
	if err != nil || ov != &op.ov || key != 0x5eed {
		t.Fatalf("control send: completion key %#x, overlapped %p (want %p), %v", key, ov, &op.ov, err)
	}
	runtime.KeepAlive(op)
}

func TestPacketGarbageProtocolInfo(t *testing.T) {
	c := listenPacketLoopback(t)
	l := listenLoopback(t)
	tcpInfo, err := Duplicate(l.Socket(), uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if nl, err := ListenerFromProtocolInfo(tcpInfo); err != nil {
		t.Fatal(err) // consume it
	} else {
		nl.Close()
	}
	random := make([]byte, ProtocolInfoSize)
	rand.Read(random)
	plausible := bytes.Clone(random)
	p := (*windows.WSAProtocolInfo)(unsafe.Pointer(&plausible[0]))
	p.AddressFamily, p.SocketType, p.Protocol = windows.AF_INET, windows.SOCK_DGRAM, windows.IPPROTO_UDP
	p.ServiceFlags3, p.ServiceFlags4 = 0, 0 // Wine reads a handle value from these
	for _, tc := range []struct {
		name string
		info []byte
		want string
	}{
		{"nil", nil, "is 0 bytes, want 628"},
		{"short", make([]byte, 10), "is 10 bytes, want 628"},
		{"zeros", make([]byte, ProtocolInfoSize), "does not describe the expected socket"},
		{"TCP", tcpInfo, "does not describe the expected socket"},
		{"random", random, "winsock: "},
		{"plausible", plausible, "winsock: "},
	} {
		pc, err := PacketConnFromProtocolInfo(tc.info)
		if err == nil {
			pc.Close()
			t.Errorf("%s: PacketConnFromProtocolInfo succeeded", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q, want it to contain %q", tc.name, err, tc.want)
		}
		t.Logf("%s: %v", tc.name, err)
	}

	// UDP bytes are no listener; the genuine bytes still work (duplicated
	// to this very process) and the copy outlives the original.
	info, err := Duplicate(c.Socket(), uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if nl, err := ListenerFromProtocolInfo(info); err == nil {
		nl.Close()
		t.Fatal("ListenerFromProtocolInfo accepted a UDP socket")
	}
	info, err = Duplicate(c.Socket(), uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := PacketConnFromProtocolInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if pc.LocalAddr().String() != c.LocalAddr().String() || pc.Socket() == c.Socket() {
		t.Fatalf("rebuilt conn on %v (socket %v), original on %v (socket %v)", pc.LocalAddr(), pc.Socket(), c.LocalAddr(), c.Socket())
	}
	c.Close()
	serveUDP(pc, "copy")
	if got := exchange(t, listenPacketLoopback(t), pc.LocalAddr(), []byte("hi")); string(got) != "hi copy" {
		t.Fatalf("rebuilt conn answered %q", got)
	}
}

// udpLoad sends a numbered datagram every few milliseconds and records who
// answered each (answers are "<seq> <body>").
type udpLoad struct {
	c          *PacketConn
	to         net.Addr
	stop       chan struct{}
	senderDone chan struct{}
	wg         sync.WaitGroup
	once       sync.Once

	mu      sync.Mutex
	sent    int            // datagrams 1..sent were sent (or are being sent)
	answers map[int]string // seq -> body
	counts  map[string]int // body -> answers
	bad     []string
}

func startUDPLoad(t *testing.T, to net.Addr) *udpLoad {
	ld := &udpLoad{c: listenPacketLoopback(t), to: to, stop: make(chan struct{}), senderDone: make(chan struct{}),
		answers: map[int]string{}, counts: map[string]int{}}
	ld.wg.Go(func() {
		defer close(ld.senderDone)
		tick := time.NewTicker(3 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ld.stop:
				return
			case <-tick.C:
			}
			ld.mu.Lock()
			ld.sent++
			seq := ld.sent
			ld.mu.Unlock()
			if _, err := ld.c.WriteTo([]byte(strconv.Itoa(seq)), ld.to); err != nil {
				ld.mu.Lock()
				ld.bad = append(ld.bad, fmt.Sprintf("sending %d: %v", seq, err))
				ld.mu.Unlock()
			}
		}
	})
	ld.wg.Go(func() {
		buf := make([]byte, 256)
		for {
			n, _, err := ld.c.ReadFrom(buf)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					ld.mu.Lock()
					ld.bad = append(ld.bad, fmt.Sprintf("client ReadFrom: %v", err))
					ld.mu.Unlock()
				}
				return
			}
			s, body, _ := strings.Cut(string(buf[:n]), " ")
			seq, err := strconv.Atoi(s)
			ld.mu.Lock()
			switch {
			case err != nil:
				ld.bad = append(ld.bad, fmt.Sprintf("bad answer %q", buf[:n]))
			case ld.answers[seq] != "":
				ld.bad = append(ld.bad, fmt.Sprintf("datagram %d answered by %s and %s", seq, ld.answers[seq], body))
			default:
				ld.answers[seq] = body
				ld.counts[body]++
			}
			ld.mu.Unlock()
		}
	})
	return ld
}

// waitFor polls cond (called with ld.mu held) until it holds or the deadline.
func (ld *udpLoad) waitFor(deadline time.Time, cond func() bool) bool {
	for {
		ld.mu.Lock()
		ok := cond() || len(ld.bad) > 0
		ld.mu.Unlock()
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// seq returns the number of the last datagram sent.
func (ld *udpLoad) seq() int {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.sent
}

// answeredAfter counts the answers by body to datagrams after seq.
func (ld *udpLoad) answeredAfter(seq int, body string) int {
	n := 0
	for s, b := range ld.answers {
		if s > seq && b == body {
			n++
		}
	}
	return n
}

// finish stops sending, waits (bounded) for the answers to what was sent,
// and reports lost datagrams and errors; once.
func (ld *udpLoad) finish(t *testing.T) {
	t.Helper()
	ld.once.Do(func() {
		close(ld.stop)
		select {
		case <-ld.senderDone:
		case <-time.After(bound):
			t.Fatal("the UDP client did not stop sending")
		}
		ld.waitFor(time.Now().Add(5*time.Second), func() bool { return len(ld.answers) >= ld.sent })
		ld.c.Close()
		done := make(chan struct{})
		go func() { ld.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(bound):
			t.Fatal("the UDP client did not stop")
		}
		ld.mu.Lock()
		defer ld.mu.Unlock()
		var lost []int
		for seq := 1; seq <= ld.sent; seq++ {
			if ld.answers[seq] == "" {
				lost = append(lost, seq)
			}
		}
		t.Logf("%d datagrams sent, %d lost; answers by body: %v", ld.sent, len(lost), ld.counts)
		if len(lost) > 0 {
			t.Errorf("%d of %d datagrams got no answer, e.g. %v", len(lost), ld.sent, lost[:min(len(lost), 10)])
		}
		for i, s := range ld.bad {
			if i == 5 {
				t.Errorf("... %d problems in all", len(ld.bad))
				break
			}
			t.Error(s)
		}
	})
}

// checkLate fails the test if a datagram sent after seq was answered by
// anybody but body.
func (ld *udpLoad) checkLate(t *testing.T, seq int, body string) {
	t.Helper()
	ld.mu.Lock()
	defer ld.mu.Unlock()
	for s, b := range ld.answers {
		if s > seq && b != body {
			t.Errorf("datagram %d, sent after %s took over, answered by %s", s, body, b)
		}
	}
}

// TestPacketHandoverInProcess hands the socket over between PacketConns of
// the same process ten times under load: the old one stops reading with
// SetReadDeadline(now), later closes, and no datagram may be lost.
func TestPacketHandoverInProcess(t *testing.T) {
	deadline := time.Now().Add(25 * time.Second)
	cur := listenPacketLoopback(t)
	curDone := serveUDP(cur, "gen0")
	ld := startUDPLoad(t, cur.LocalAddr())
	defer ld.finish(t)
	if !ld.waitFor(deadline, func() bool { return ld.counts["gen0"] >= 5 }) {
		t.Fatal("gen0 did not answer")
	}
	for gen := 1; gen <= 10; gen++ {
		info, err := Duplicate(cur.Socket(), uint32(os.Getpid()))
		if err != nil {
			t.Fatal(err)
		}
		next, err := PacketConnFromProtocolInfo(info)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { next.Close() })
		name := fmt.Sprintf("gen%d", gen)
		nextDone := serveUDP(next, name)
		// Both copies read for a moment.
		from := ld.seq()
		ld.waitFor(deadline, func() bool { return ld.sent >= from+10 })
		cur.SetReadDeadline(time.Now())
		if err := waitErr(t, curDone, "the old server"); !isTimeout(err) {
			t.Fatalf("generation %d: the old server ended with %v, want a timeout", gen, err)
		}
		mark := ld.seq()
		if !ld.waitFor(deadline, func() bool { return ld.answeredAfter(mark, name) >= 10 }) {
			t.Fatalf("generation %d: too few answers after the handover", gen)
		}
		if err := cur.Close(); err != nil {
			t.Fatal(err)
		}
		ld.checkLate(t, mark, name)
		cur, curDone = next, nextDone
	}
	ld.finish(t)
}

const packetHelperEnv = "BATON_WINSOCK_PACKET_HELPER_CHILD"

// TestPacketHelperChild is the new process of TestPacketHandoff: it reads
// the protocol info from stdin, rebuilds the UDP socket and answers each
// datagram with its pid.
func TestPacketHelperChild(t *testing.T) {
	if os.Getenv(packetHelperEnv) != "1" {
		t.Skip("helper process for TestPacketHandoff")
	}
	info, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<16))
	if err != nil {
		t.Fatal(err)
	}
	c, err := PacketConnFromProtocolInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	serveUDP(c, strconv.Itoa(os.Getpid()))
	os.Stdout.WriteString("ready\n")
	time.Sleep(2 * bound) // the parent kills us; this only bounds an orphan
	os.Exit(0)
}

// TestPacketHandoff hands the UDP socket to a child process while a client
// sends a datagram every few milliseconds: the parent answers, then both,
// then the parent stops reading (SetReadDeadline(now)) and the child answers
// everything sent after that, also after the parent's Close. No datagram may
// go unanswered.
func TestPacketHandoff(t *testing.T) {
	deadline := time.Now().Add(25 * time.Second)
	c := listenPacketLoopback(t)
	parent := strconv.Itoa(os.Getpid())
	parentDone := serveUDP(c, parent)
	ld := startUDPLoad(t, c.LocalAddr())
	defer ld.finish(t)
	if !ld.waitFor(deadline, func() bool { return ld.counts[parent] >= 10 }) {
		t.Fatal("the parent did not answer")
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestPacketHelperChild$")
	cmd.Env = append(os.Environ(), packetHelperEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ld.finish(t) // before the child goes away
		cmd.Process.Kill()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(bound):
			t.Error("the child did not exit after Kill")
		}
		if t.Failed() {
			t.Logf("child stderr:\n%s", stderr.String())
		}
	}()
	child := strconv.Itoa(cmd.Process.Pid)

	info, err := Duplicate(c.Socket(), uint32(cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write(info); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
		io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-ready:
		if strings.TrimSpace(line) != "ready" {
			t.Fatalf("child said %q, want ready", line)
		}
	case <-time.After(time.Until(deadline)):
		t.Fatal("the child did not get ready")
	}

	// Both processes read now; the kernel picks which one gets a datagram.
	from := ld.seq()
	ld.waitFor(time.Now().Add(3*time.Second), func() bool { return ld.answeredAfter(from, child) >= 3 })
	c.SetReadDeadline(time.Now())
	if err := waitErr(t, parentDone, "the parent's server"); !isTimeout(err) {
		t.Fatalf("the parent's server ended with %v, want a timeout", err)
	}
	stopped := ld.seq()
	if !ld.waitFor(deadline, func() bool { return ld.answeredAfter(stopped, child) >= 50 }) {
		t.Fatal("too few answers from the child after the parent stopped reading")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	closed := ld.seq()
	if !ld.waitFor(deadline, func() bool { return ld.answeredAfter(closed, child) >= 50 }) {
		t.Fatal("too few answers from the child after the parent closed")
	}
	ld.finish(t)
	ld.checkLate(t, stopped, child)
	ld.mu.Lock()
	defer ld.mu.Unlock()
	t.Logf("parent %s, child %s; parent stopped reading after datagram %d, closed after %d", parent, child, stopped, closed)
	if ld.counts[parent] == 0 || ld.counts[child] == 0 {
		t.Errorf("want answers from both the parent and the child: %v", ld.counts)
	}
}
