package winpipe

import (
	"bufio"
	"context"
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

	"golang.org/x/sys/windows"
)

// These tests use the real Windows APIs; on this project they run under Wine
// (scripts/wine/exec). What Wine cannot confirm is said where it matters:
// above all, Wine runs every process as the same user, so that another user
// is refused by the DACL can only be seen on real Windows.

// wait bounds every blocking step: generous, because Wine is slow.
const wait = 20 * time.Second

func pipePath(t *testing.T, suffix string) string {
	t.Helper()
	return fmt.Sprintf(`\\.\pipe\winpipe-t%d-%s`, os.Getpid(), suffix)
}

func underWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

func ownerOnly(t *testing.T) string {
	t.Helper()
	sddl, err := OwnerOnlySDDL()
	if err != nil {
		t.Fatal(err)
	}
	return sddl
}

func listen(t *testing.T, path string) *Listener {
	t.Helper()
	ln, err := Listen(path, ownerOnly(t))
	if err != nil {
		t.Fatalf("Listen(%q): %v", path, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// server stands for a service using the pipe: it answers every connection
// accepted on its listener by reading one line and writing its id on one
// line, then closes the connection.
type server struct {
	ln *Listener
	wg sync.WaitGroup
}

func startServer(ln *Listener, id string) *server {
	s := &server{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				time.Sleep(10 * time.Millisecond)
				continue
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(wait))
				if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
					return // a silent client
				}
				fmt.Fprintf(c, "%s\n", id)
			}()
		}
	}()
	return s
}

// stop closes the listener and waits until every accepted connection has
// been answered. It may be called more than once.
func (s *server) stop() {
	s.ln.Close()
	s.wg.Wait()
}

// serveID starts a server for the duration of the test.
func serveID(t *testing.T, ln *Listener, id string) *server {
	t.Helper()
	s := startServer(ln, id)
	t.Cleanup(s.stop)
	return s
}

// ask sends one request to path and returns the id of the server that
// answered.
func ask(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		return "", err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := c.Write([]byte("hello\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(line, "\n"), nil
}

func TestRoundTrip(t *testing.T) {
	path := pipePath(t, "rt")
	ln := listen(t, path)
	if ln.Addr().String() != path || ln.Addr().Network() != "pipe" {
		t.Errorf("Addr = %s %q, want pipe %q", ln.Addr().Network(), ln.Addr(), path)
	}
	var _ net.Listener = ln
	serveID(t, ln, "a")

	for i := 0; i < 5; i++ {
		if id, err := ask(context.Background(), path); err != nil || id != "a" {
			t.Fatalf("sequential request %d: id %q err %v", i, id, err)
		}
	}

	// Clients that come and go without a word do not disturb the listener.
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		c, err := Dial(ctx, path)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if id, err := ask(context.Background(), path); err != nil || id != "a" {
		t.Fatalf("request after silent clients: id %q err %v", id, err)
	}

	const workers, each = 6, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if id, err := ask(context.Background(), path); err != nil || id != "a" {
					errs <- fmt.Errorf("id %q err %v", id, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error("concurrent request:", err)
	}
}

// TestSecurityDescriptor reads the owner and DACL back from a pipe made with
// OwnerOnlySDDL and checks them structurally: exactly three ACCESS_ALLOWED
// ACEs, for our user, SYSTEM and Administrators, nothing inherited, nothing
// for anyone else. Under Wine this proves the descriptor is built and
// applied as intended; that the system then refuses another user (and
// remote clients) can only be observed on real Windows.
func TestSecurityDescriptor(t *testing.T) {
	ln := listen(t, pipePath(t, "sd"))
	sddl, err := ln.SDDL()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pipe security descriptor: %s", sddl)
	// No well-known broad group may appear at all.
	for _, broad := range []string{";WD)", ";AU)", ";BU)", ";AN)", ";IU)", ";NU)", ";S-1-1-0)", ";S-1-5-11)", ";S-1-5-32-545)", ";S-1-5-7)"} {
		if strings.Contains(sddl, broad) {
			t.Errorf("descriptor grants something to %s: %s", strings.Trim(broad, ";)"), sddl)
		}
	}

	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		t.Fatalf("read-back SDDL does not parse: %v", err)
	}
	// Walk the descriptor read back from the handle too, not just the text,
	// and the one OwnerOnlySDDL writes.
	sd2, err := ln.securityDescriptor()
	if err != nil {
		t.Fatal(err)
	}
	sd3, err := windows.SecurityDescriptorFromString(ownerOnly(t))
	if err != nil {
		t.Fatalf("OwnerOnlySDDL does not parse: %v", err)
	}
	for i, sd := range []*windows.SECURITY_DESCRIPTOR{sd, sd2, sd3} {
		t.Run(fmt.Sprint([]string{"sddl", "handle", "OwnerOnlySDDL"}[i]), func(t *testing.T) { checkDescriptor(t, sd) })
	}

	if l, err := Listen(pipePath(t, "badsd"), "not an SDDL"); err == nil {
		l.Close()
		t.Error("Listen accepted a malformed security descriptor")
	}
}

// fileAllAccess is FILE_ALL_ACCESS ("FA" in SDDL).
const fileAllAccess = windows.STANDARD_RIGHTS_REQUIRED | windows.SYNCHRONIZE | 0x1ff

func checkDescriptor(t *testing.T, sd *windows.SECURITY_DESCRIPTOR) {
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		t.Fatal(err)
	}
	me := tu.User.Sid
	system, _ := windows.CreateWellKnownSid(windows.WinLocalSystemSid)
	admins, _ := windows.CreateWellKnownSid(windows.WinBuiltinAdministratorsSid)

	owner, _, err := sd.Owner()
	if err != nil || owner == nil || !owner.Equals(me) {
		t.Errorf("owner = %v (err %v), want this process's user %v", owner, err, me)
	}
	control, _, err := sd.Control()
	if err != nil {
		t.Fatal(err)
	}
	if control&windows.SE_DACL_PROTECTED == 0 {
		t.Errorf("DACL is not protected (control %#x): inheritable ACEs could be added", control)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		t.Fatalf("no DACL: %v", err)
	}
	if dacl == nil {
		t.Fatal("NULL DACL: everyone has full access")
	}
	want := map[string]*windows.SID{"user": me, "SYSTEM": system, "Administrators": admins}
	if me.Equals(system) {
		delete(want, "user")
	}
	if int(dacl.AceCount) != len(want) {
		t.Errorf("DACL has %d ACEs, want %d", dacl.AceCount, len(want))
	}
	seen := map[string]bool{}
	for i := uint32(0); i < uint32(dacl.AceCount); i++ {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			t.Fatalf("ACE %d: %v", i, err)
		}
		sid := (*windows.SID)(unsafe.Pointer(&ace.SidStart))
		if ace.Header.AceType != windows.ACCESS_ALLOWED_ACE_TYPE {
			t.Errorf("ACE %d (%v) has type %d, want ACCESS_ALLOWED", i, sid, ace.Header.AceType)
			continue
		}
		if ace.Header.AceFlags != 0 {
			t.Errorf("ACE %d (%v) has flags %#x, want none (no inheritance)", i, sid, ace.Header.AceFlags)
		}
		if ace.Mask != fileAllAccess {
			t.Errorf("ACE %d (%v) grants %#x, want FILE_ALL_ACCESS %#x", i, sid, ace.Mask, fileAllAccess)
		}
		found := ""
		for who, w := range want {
			if sid.Equals(w) {
				found = who
			}
		}
		if found == "" {
			t.Errorf("ACE %d grants access to an unexpected SID %v", i, sid)
		} else if seen[found] {
			t.Errorf("two ACEs for %s", found)
		}
		seen[found] = true
	}
	for who := range want {
		if !seen[who] {
			t.Errorf("no ACE for %s", who)
		}
	}
}

func TestDialNotFound(t *testing.T) {
	path := pipePath(t, "nobody")
	start := time.Now()
	_, err := Dial(context.Background(), path)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Dial without a listener: %v, want ErrNotFound", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" || !strings.Contains(err.Error(), path) {
		t.Errorf("error %q is not a dial *net.OpError naming the pipe", err)
	}
	// Bounded by dialAbsentWait; the margin only absorbs a slow machine.
	if d := time.Since(start); d < dialAbsentWait || d > dialAbsentWait+wait {
		t.Errorf("Dial gave up after %v, want about %v", d, dialAbsentWait)
	}
	t.Logf("gave up after %v", time.Since(start))

	// A context shorter than the retry window ends it and still says why.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, path); !errors.Is(err, ErrNotFound) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial with a short context: %v, want ErrNotFound and DeadlineExceeded", err)
	}
}

func TestCloseWakesAccept(t *testing.T) {
	path := pipePath(t, "close")
	ln, err := Listen(path, ownerOnly(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	for i := 0; i < 2; i++ { // one blocked in ConnectNamedPipe, one queued behind it
		go func() {
			c, err := ln.Accept()
			if c != nil {
				c.Close()
			}
			done <- err
		}()
	}
	time.Sleep(100 * time.Millisecond) // not required for correctness: gives Accept time to block
	closed := make(chan error, 1)
	go func() { closed <- ln.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Close did not return")
	}
	for i := 0; i < 2; i++ {
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(wait):
			t.Fatal("Close did not wake Accept")
		}
	}
	if err := ln.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed listener: %v", err)
	}
	if _, err := ln.SDDL(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SDDL on a closed listener: %v", err)
	}
	// The last instance is gone with the listener: the name is free.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := Dial(ctx, path); !errors.Is(err, ErrNotFound) {
		t.Errorf("Dial after Close: %v, want ErrNotFound", err)
	}
}

var (
	kernel32                  = windows.NewLazySystemDLL("kernel32.dll")
	procPeekNamedPipe         = kernel32.NewProc("PeekNamedPipe")
	procGetProcessHandleCount = kernel32.NewProc("GetProcessHandleCount")
	procGetHandleInformation  = kernel32.NewProc("GetHandleInformation")
)

// waitConnected waits until a client has opened the pending instance of l.
// PeekNamedPipe on a server instance fails with ERROR_PIPE_LISTENING until
// a client opens it.
func waitConnected(t *testing.T, l *Listener) {
	t.Helper()
	for deadline := time.Now().Add(wait); ; time.Sleep(2 * time.Millisecond) {
		l.mu.Lock()
		r, _, _ := procPeekNamedPipe.Call(uintptr(l.pending), 0, 0, 0, 0, 0)
		l.mu.Unlock()
		if r != 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no client opened the pending instance")
		}
	}
}

// TestDroppedBeforeAccept: a client that opened an instance which its
// listener then closes without accepting it (a generation stopping while
// clients keep coming) is not lost: Dial sees the pipe break before the
// greeting and tries again, reaching the next generation if there is one.
func TestDroppedBeforeAccept(t *testing.T) {
	for _, successor := range []bool{true, false} {
		t.Run(fmt.Sprintf("successor=%v", successor), func(t *testing.T) {
			path := pipePath(t, fmt.Sprintf("drop%v", successor))
			ln1, err := Listen(path, ownerOnly(t))
			if err != nil {
				t.Fatal(err)
			}
			defer ln1.Close()
			type res struct {
				id  string
				err error
			}
			done := make(chan res, 1)
			go func() { id, err := ask(context.Background(), path); done <- res{id, err} }()
			waitConnected(t, ln1)
			dropped := dialDropped.Load()
			if successor {
				serveID(t, listen(t, path), "new")
			}
			ln1.Close() // never accepted the client
			var r res
			select {
			case r = <-done:
			case <-time.After(dialBusyWait + wait):
				t.Fatal("request did not end")
			}
			if successor && (r.err != nil || r.id != "new") {
				t.Fatalf("request: id %q err %v, want an answer from the successor", r.id, r.err)
			}
			if !successor && !errors.Is(r.err, ErrNotFound) {
				t.Fatalf("request: id %q err %v, want ErrNotFound", r.id, r.err)
			}
			if dialDropped.Load() == dropped {
				t.Error("Dial did not see the dropped instance")
			}
		})
	}
}

// dialAsync dials path in the background.
func dialAsync(path string) <-chan net.Conn {
	ch := make(chan net.Conn, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		c, err := Dial(ctx, path)
		if err != nil {
			c = errConn{err}
		}
		ch <- c
	}()
	return ch
}

// errConn carries a dial error through dialAsync's channel.
type errConn struct{ error }

func (errConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (errConn) Write([]byte) (int, error)        { return 0, io.EOF }
func (errConn) Close() error                     { return nil }
func (errConn) LocalAddr() net.Addr              { return nil }
func (errConn) RemoteAddr() net.Addr             { return nil }
func (errConn) SetDeadline(time.Time) error      { return nil }
func (errConn) SetReadDeadline(time.Time) error  { return nil }
func (errConn) SetWriteDeadline(time.Time) error { return nil }

func dialed(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-ch:
		if e, ok := c.(errConn); ok {
			t.Fatalf("dial: %v", e.error)
		}
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(wait + time.Second):
		t.Fatal("dial did not return")
		return nil
	}
}

// connectPair returns both ends of a new connection to ln.
func connectPair(t *testing.T, ln net.Listener) (client, server net.Conn) {
	t.Helper()
	ch := dialAsync(ln.Addr().String())
	server = acceptWithin(t, ln)
	t.Cleanup(func() { server.Close() })
	return dialed(t, ch), server
}

func acceptWithin(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		return r.c
	case <-time.After(wait):
		ln.Close()
		t.Fatal("Accept did not return")
		return nil
	}
}

// TestClientWaitsForAccept: the first instance exists as soon as Listen
// returns, so a client that comes before Accept is taken, not refused; Dial
// returns once it is accepted (it waits for the greeting).
func TestClientWaitsForAccept(t *testing.T) {
	path := pipePath(t, "early")
	ln := listen(t, path)
	ch := dialAsync(path)
	waitConnected(t, ln) // before any Accept
	select {
	case <-ch:
		t.Fatal("Dial returned before Accept")
	case <-time.After(50 * time.Millisecond): // only makes a wrong early return likely to show
	}
	sc := acceptWithin(t, ln)
	defer sc.Close()
	c := dialed(t, ch)
	if pid, err := ClientPID(sc); err != nil || pid != uint32(os.Getpid()) {
		t.Errorf("ClientPID(server end) = %d, %v; want %d", pid, err, os.Getpid())
	}
	if pid, err := ClientPID(c); err == nil {
		t.Errorf("ClientPID(client end) = %d, want an error", pid)
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if pid, err := ClientPID(p1); err == nil {
		t.Errorf("ClientPID(net.Pipe) = %d, want an error", pid)
	}
	if sc.RemoteAddr().Network() != "pipe" || c.LocalAddr().String() != ln.Addr().String() {
		t.Errorf("addresses: %v %v", sc.RemoteAddr(), c.LocalAddr())
	}

	// Both directions, then EOF when the other end closes.
	sc.SetDeadline(time.Now().Add(wait))
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(sc).ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("server read %q %v", line, err)
	}
	if _, err := sc.Write([]byte("pong\n")); err != nil {
		t.Fatal(err)
	}
	sc.Close() // data written before the close is still delivered
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || line != "pong\n" {
		t.Fatalf("client read %q %v", line, err)
	}
	if n, err := r.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read after the server closed: %d %v, want EOF", n, err)
	}
	if _, err := sc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write on a closed conn: %v, want net.ErrClosed", err)
	}
}

// TestDeadlines: a user of the pipe relies on SetDeadline to abandon a
// silent server, and on SetReadDeadline to drop a silent client (as ctl's
// Do and Server do).
func TestDeadlines(t *testing.T) {
	ln := listen(t, pipePath(t, "dl"))
	c, sc := connectPair(t, ln)

	for _, end := range []struct {
		name string
		c    net.Conn
	}{{"client", c}, {"server", sc}} {
		end.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		start := time.Now()
		_, err := end.c.Read(make([]byte, 1))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s read past its deadline: %v, want a timeout", end.name, err)
		}
		if d := time.Since(start); d > wait {
			t.Errorf("%s read returned after %v", end.name, d)
		}
		end.c.SetReadDeadline(time.Time{})
	}

	// A deadline set from another goroutine wakes a blocked read (this is
	// what a context.AfterFunc does, as in ctl's Do).
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); done <- err }()
	time.Sleep(50 * time.Millisecond)
	c.SetDeadline(time.Now())
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("blocked read: %v, want a timeout", err)
		}
	case <-time.After(wait):
		t.Fatal("SetDeadline did not wake a blocked read")
	}

	// Dial bounded by its context while the listener never accepts: it
	// waits for the greeting, then gives up with the context.
	path := pipePath(t, "dl-noaccept")
	listen(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Dial(ctx, path); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNotFound) {
		t.Errorf("Dial to a listener that does not accept: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > wait {
		t.Errorf("Dial returned after %v", d)
	}
}

// handleCount returns the number of handles this process holds.
// GetProcessHandleCount is a stub under Wine 8.0 (it reports 0): then the
// handle table is probed instead, value by value, up to maxProbedHandle.
func handleCount(t *testing.T) int {
	t.Helper()
	var n uint32
	r, _, err := procGetProcessHandleCount.Call(uintptr(windows.CurrentProcess()), uintptr(unsafe.Pointer(&n)))
	if r == 0 {
		t.Fatalf("GetProcessHandleCount: %v", err)
	}
	if n > 0 {
		return int(n)
	}
	const maxProbedHandle = 1 << 16
	count := 0
	for h := windows.Handle(4); h < maxProbedHandle; h += 4 {
		var flags uint32
		if r, _, _ := procGetHandleInformation.Call(uintptr(h), uintptr(unsafe.Pointer(&flags))); r != 0 {
			count++
		}
	}
	if count == 0 {
		t.Skip("cannot count the handles of this process")
	}
	return count
}

func TestNoHandleLeak(t *testing.T) {
	path := pipePath(t, "leak")
	sddl := ownerOnly(t)
	round := func(n int) {
		for i := 0; i < n; i++ {
			ln, err := Listen(path, sddl)
			if err != nil {
				t.Fatal(err)
			}
			srv := startServer(ln, "x")
			for j := 0; j < 10; j++ {
				if _, err := ask(context.Background(), path); err != nil {
					t.Fatal(err)
				}
			}
			// Listener closed with Accept blocked in ConnectNamedPipe.
			srv.stop()
			// Listener closed with no Accept running.
			ln2, err := Listen(path, sddl)
			if err != nil {
				t.Fatal(err)
			}
			ln2.Close()
		}
	}
	round(2) // warm up: runtime threads, lazy DLLs, timers
	runtime.GC()
	before := handleCount(t)
	round(20) // 20 listeners and 200 connections
	runtime.GC()
	after := handleCount(t)
	t.Logf("handles before %d, after %d", before, after)
	// A leak would be at least one handle per connection or listener (200+);
	// the slack absorbs the runtime creating a thread or two.
	if after-before > 10 {
		t.Errorf("handle count grew from %d to %d over 20 listeners and 200 connections", before, after)
	}
}

// TestTwoListeners: during a handover the old and the new generation both
// hold instances of the name; a client reaches either, and once the old one
// closes, the new one gets everything.
func TestTwoListeners(t *testing.T) {
	path := pipePath(t, "two")
	ln1 := listen(t, path)
	ln2 := listen(t, path)

	// Each listener has exactly one listening instance: two clients take
	// both, so each listener accepts one of them (deterministic).
	chs := []<-chan net.Conn{dialAsync(path), dialAsync(path)}
	waitConnected(t, ln1)
	waitConnected(t, ln2)
	for i, ln := range []net.Listener{ln1, ln2} {
		sc := acceptWithin(t, ln)
		sc.SetDeadline(time.Now().Add(wait))
		fmt.Fprintf(sc, "%d\n", i+1)
		sc.Close()
	}
	ids := map[string]bool{}
	for _, ch := range chs {
		c := dialed(t, ch)
		c.SetDeadline(time.Now().Add(wait))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		ids[strings.TrimSpace(line)] = true
	}
	if !ids["1"] || !ids["2"] {
		t.Fatalf("clients reached %v, want both listeners", ids)
	}

	// Now with both serving, as in a handover.
	srv1 := serveID(t, ln1, "old")
	serveID(t, ln2, "new")
	got := map[string]int{}
	for i := 0; i < 10; i++ {
		id, err := ask(context.Background(), path)
		if err != nil {
			t.Fatalf("request %d with both listening: %v", i, err)
		}
		got[id]++
	}
	t.Logf("with both listening: %v", got) // which instance a client gets is the system's choice
	srv1.stop()
	for i := 0; i < 10; i++ {
		if id, err := ask(context.Background(), path); err != nil || id != "new" {
			t.Fatalf("request %d after the old listener closed: id %q err %v", i, id, err)
		}
	}
}

// TestRepeatedHandovers: clients keep asking while generations take turns
// (the new one listens, then the old one stops), as during repeated
// upgrades. No request may fail.
func TestRepeatedHandovers(t *testing.T) {
	path := pipePath(t, "turns")
	sddl := ownerOnly(t)
	srvFor := func(gen int) *server {
		ln, err := Listen(path, sddl)
		if err != nil {
			t.Fatal(err)
		}
		return startServer(ln, strconv.Itoa(gen))
	}
	dropped := dialDropped.Load()
	cur := srvFor(0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok int
	var failures []error
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := ask(context.Background(), path)
				mu.Lock()
				if err != nil {
					failures = append(failures, err)
				} else {
					ok++
				}
				mu.Unlock()
			}
		}()
	}
	const generations = 10
	for gen := 1; gen <= generations; gen++ {
		time.Sleep(30 * time.Millisecond)
		next := srvFor(gen)
		cur.stop()
		cur = next
	}
	time.Sleep(30 * time.Millisecond)
	close(stop)
	wg.Wait()
	cur.stop()
	t.Logf("%d requests answered across %d handovers; %d dials retried after their instance was dropped unaccepted",
		ok, generations, dialDropped.Load()-dropped)
	for _, err := range failures {
		t.Error("request failed:", err)
	}
}

// TestHandoverAcrossProcesses is the same with the new generation in
// another process (this test binary run again as a helper).
func TestHandoverAcrossProcesses(t *testing.T) {
	path := pipePath(t, "proc")
	srv := serveID(t, listen(t, path), "parent")

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "BATON_WINPIPE_HELPER="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		stdin.Close()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("helper: %v", err)
			}
		case <-time.After(wait):
			cmd.Process.Kill()
			t.Error("helper did not exit")
		}
	}()
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line)
		io.Copy(io.Discard, stdout)
	}()
	var childID string
	select {
	case childID = <-ready:
		if !strings.HasPrefix(childID, "child-") {
			t.Fatalf("helper said %q", childID)
		}
	case <-time.After(wait):
		t.Fatal("helper not ready")
	}

	got := map[string]int{}
	for i := 0; i < 6; i++ {
		id, err := ask(context.Background(), path)
		if err != nil {
			t.Fatalf("request %d with both processes listening: %v", i, err)
		}
		got[id]++
	}
	t.Logf("with both processes listening: %v", got)
	srv.stop()
	for i := 0; i < 6; i++ {
		if id, err := ask(context.Background(), path); err != nil || id != childID {
			t.Fatalf("request %d after the parent closed: id %q err %v, want %s", i, id, err, childID)
		}
	}
}

// TestHelperProcess is not a test: TestHandoverAcrossProcesses runs it in a
// child process. It serves the pipe until its stdin closes.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv("BATON_WINPIPE_HELPER")
	if path == "" {
		t.Skip("helper process only")
	}
	ln, err := Listen(path, ownerOnly(t))
	if err != nil {
		t.Fatal(err)
	}
	id := "child-" + strconv.Itoa(os.Getpid())
	srv := startServer(ln, id)
	fmt.Println(id)
	io.Copy(io.Discard, os.Stdin)
	srv.stop()
}

// TestForeignDACL: a pipe whose DACL admits only SYSTEM (not us, not
// Administrators even if we are elevated: the default owner only gets
// READ_CONTROL and WRITE_DAC). Opening it must fail with os.ErrPermission,
// and so must adding an instance to it (this is how another user's
// listener holding the name shows).
// Wine 8.0 does not check access on named pipes at all, so under Wine this
// only runs as far as it can; real Windows confirms the refusal.
func TestForeignDACL(t *testing.T) {
	// Listen's refusal is the Errno of CreateNamedPipe, wrapped: it must
	// satisfy os.ErrPermission on its own.
	if !errors.Is(fmt.Errorf("x: %w", windows.ERROR_ACCESS_DENIED), os.ErrPermission) {
		t.Error("ERROR_ACCESS_DENIED does not satisfy os.ErrPermission")
	}
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		t.Fatal(err)
	}
	if system, _ := windows.CreateWellKnownSid(windows.WinLocalSystemSid); tu.User.Sid.Equals(system) {
		t.Skip("running as SYSTEM: the foreign DACL would admit us")
	}
	path := pipePath(t, "foreign")
	l, err := Listen(path, "D:P(A;;FA;;;SY)")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() { // in case the system lets us in after all (Wine)
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := Dial(ctx, path)
	if err == nil {
		c.Close()
		if underWine() {
			t.Skip("Wine does not enforce the DACL of named pipes; real Windows must refuse here")
		}
		t.Fatal("opened a pipe whose DACL admits only SYSTEM")
	}
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("Dial: %v, want os.ErrPermission", err)
	}
	if ln, err := Listen(path, ownerOnly(t)); !errors.Is(err, os.ErrPermission) {
		if ln != nil {
			ln.Close()
		}
		t.Errorf("Listen on a name held under a foreign DACL: %v, want os.ErrPermission", err)
	}
}
