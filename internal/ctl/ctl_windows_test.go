package ctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/winpipe"
	"golang.org/x/sys/windows"
)

// These tests use the real Windows APIs; on this project they run under Wine
// (scripts/wine/exec). What Wine cannot confirm is said where it matters:
// above all, Wine runs every process as the same user, so that another user
// is refused by the DACL can only be seen on real Windows. The pipe
// machinery itself (greeting and retries, handle use, instances shared
// during a handover, deadlines, the security descriptor's structure) is
// tested in internal/winpipe; these test the control endpoint built on it.

// wait bounds every blocking step: generous, because Wine is slow.
const wait = 20 * time.Second

// absentWait is how long dial retries a pipe that does not exist (winpipe's
// dialAbsentWait).
const absentWait = time.Second

func pipeName(t *testing.T, suffix string) string {
	t.Helper()
	return fmt.Sprintf("t%d-%s", os.Getpid(), suffix)
}

func underWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

// serveID answers every request with the id of the server.
func serveID(t *testing.T, ln net.Listener, id string) *Server {
	t.Helper()
	srv := Serve(ln, func(ctx context.Context, req Request) Response {
		return OKResponse(map[string]string{"op": req.Op, "id": id})
	}, nil)
	t.Cleanup(func() { srv.Close(); srv.Wait() })
	return srv
}

// status sends one status request and returns the id of the server that answered.
func status(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	resp, err := Do(ctx, name, Request{Op: OpStatus})
	if err != nil {
		return "", err
	}
	var got map[string]string
	if !resp.OK {
		return "", fmt.Errorf("not ok: %+v", resp)
	}
	if err := resp.Decode(&got); err != nil {
		return "", err
	}
	if got["op"] != OpStatus {
		return "", fmt.Errorf("unexpected result %v", got)
	}
	return got["id"], nil
}

func listen(t *testing.T, name string) net.Listener {
	t.Helper()
	ln, err := Listen(name)
	if err != nil {
		t.Fatalf("Listen(%q): %v", name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestPipeRoundTrip(t *testing.T) {
	name := pipeName(t, "rt")
	ln := listen(t, name)
	if want, _ := Address(name); ln.Addr().String() != want || ln.Addr().Network() != "pipe" {
		t.Errorf("Addr = %s %q, want pipe %q", ln.Addr().Network(), ln.Addr(), want)
	}
	serveID(t, ln, "a")

	for i := 0; i < 5; i++ {
		if id, err := status(context.Background(), name); err != nil || id != "a" {
			t.Fatalf("sequential request %d: id %q err %v", i, id, err)
		}
	}

	// Clients that come and go without a word do not disturb the listener.
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		c, _, err := dial(ctx, name)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if id, err := status(context.Background(), name); err != nil || id != "a" {
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
				if id, err := status(context.Background(), name); err != nil || id != "a" {
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

	// Once the last listener is closed the name is free: Do says no service
	// listens there.
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := Do(ctx, name, Request{Op: OpStatus}); !errors.Is(err, ErrNoEndpoint) {
		t.Errorf("Do after Close: %v, want ErrNoEndpoint", err)
	}
}

func TestPipeMalformedAndVersion(t *testing.T) {
	name := pipeName(t, "bad")
	ln := listen(t, name)
	called := false
	srv := Serve(ln, func(ctx context.Context, req Request) Response { called = true; return OKResponse(1) }, nil)
	for _, msg := range []string{"not json\n", `{"baton":99,"op":"status"}` + "\n"} {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		c, _, err := dial(ctx, name)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(wait))
		c.Write([]byte(msg))
		var resp Response
		err = readLine(bufio.NewReader(c), &resp)
		c.Close()
		if err != nil || resp.OK || resp.Error == "" {
			t.Errorf("request %q: resp %+v err %v, want a clear refusal", msg, resp, err)
		}
	}
	srv.Close()
	srv.Wait()
	if called {
		t.Error("handler ran for a malformed request")
	}
}

// TestPipeListenerSDDL: the control pipe is made with winpipe.OwnerOnlySDDL
// (its structure is checked in internal/winpipe), and ListenerSDDL reads it
// back.
func TestPipeListenerSDDL(t *testing.T) {
	ln := listen(t, pipeName(t, "sd"))
	sddl, err := ListenerSDDL(ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pipe security descriptor: %s", sddl)
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		t.Fatal(err)
	}
	me := tu.User.Sid.String()
	if !strings.HasPrefix(sddl, "O:"+me) || !strings.Contains(sddl, "D:P") || !strings.Contains(sddl, "(A;;FA;;;"+me+")") {
		t.Errorf("descriptor %s is not owned by and granted to this process's user %s alone", sddl, me)
	}
	// No well-known broad group may appear at all.
	for _, broad := range []string{";WD)", ";AU)", ";BU)", ";AN)", ";IU)", ";NU)", ";S-1-1-0)", ";S-1-5-11)", ";S-1-5-32-545)", ";S-1-5-7)"} {
		if strings.Contains(sddl, broad) {
			t.Errorf("descriptor grants something to %s: %s", strings.Trim(broad, ";)"), sddl)
		}
	}
	if _, err := ListenerSDDL(&net.TCPListener{}); err == nil {
		t.Error("ListenerSDDL accepted a TCP listener")
	}
	ln.Close()
	if _, err := ListenerSDDL(ln); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ListenerSDDL on a closed listener: %v", err)
	}
}

func TestPipeNoEndpoint(t *testing.T) {
	name := pipeName(t, "nobody")
	start := time.Now()
	_, err := Do(context.Background(), name, Request{Op: OpStatus})
	if !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("Do without a service: %v, want ErrNoEndpoint", err)
	}
	path, _ := Address(name)
	if want := fmt.Sprintf("%v: %q (%s)", ErrNoEndpoint, name, path); err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	// Bounded by absentWait; the margin only absorbs a slow machine.
	if d := time.Since(start); d > absentWait+wait {
		t.Errorf("Do took %v", d)
	}
	t.Logf("gave up after %v", time.Since(start))

	// A context shorter than the retry window ends it and still says why.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Do(ctx, name, Request{Op: OpStatus}); !errors.Is(err, ErrNoEndpoint) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Do with a short context: %v, want ErrNoEndpoint and DeadlineExceeded", err)
	} else if want := fmt.Sprintf("%v: %q (%s): %v", ErrNoEndpoint, name, path, context.DeadlineExceeded); err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

// TestPipeCheckPeer: the server end of a control connection has a client
// to identify and is admitted; anything else is refused.
func TestPipeCheckPeer(t *testing.T) {
	name := pipeName(t, "peer")
	ln := listen(t, name)
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		c, _, err := dial(ctx, name)
		ch <- res{c, err}
	}()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	var r res
	select {
	case r = <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer r.c.Close()
	case <-time.After(wait):
		t.Fatal("dial did not return")
	}
	if err := checkPeer(sc); err != nil {
		t.Errorf("checkPeer(server end): %v", err)
	}
	if err := checkPeer(r.c); !errors.Is(err, ErrPeerRefused) {
		t.Errorf("checkPeer(client end): %v, want ErrPeerRefused", err)
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if err := checkPeer(p1); !errors.Is(err, ErrPeerRefused) {
		t.Errorf("checkPeer(net.Pipe): %v, want ErrPeerRefused", err)
	}
}

// TestPipeDoSilentService: Do against a service that never answers ends
// with its context.
func TestPipeDoSilentService(t *testing.T) {
	name := pipeName(t, "silent")
	ln := listen(t, name)
	srv := Serve(ln, func(ctx context.Context, req Request) Response {
		<-ctx.Done()
		return Response{Code: CodeCanceled}
	}, nil)
	defer func() { srv.Abort(); srv.Wait() }()
	dctx, dcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer dcancel()
	start := time.Now()
	if _, err := Do(dctx, name, Request{Op: OpStatus}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Do against a silent service: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > wait {
		t.Errorf("Do returned after %v", d)
	}
}

// TestPipeRepeatedHandovers: clients keep asking while generations take
// turns (the new one listens, then the old one stops), as during repeated
// upgrades. No request may fail. This is the control endpoint's end of
// what internal/winpipe tests for bare pipes: Serve's Close and Do's dial.
func TestPipeRepeatedHandovers(t *testing.T) {
	name := pipeName(t, "turns")
	srvFor := func(gen int) *Server {
		ln, err := Listen(name)
		if err != nil {
			t.Fatal(err)
		}
		id := strconv.Itoa(gen)
		return Serve(ln, func(ctx context.Context, req Request) Response {
			return OKResponse(map[string]string{"op": req.Op, "id": id})
		}, nil)
	}
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
				_, err := status(context.Background(), name)
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
		cur.Close()
		cur.Wait()
		cur = next
	}
	time.Sleep(30 * time.Millisecond)
	close(stop)
	wg.Wait()
	cur.Close()
	cur.Wait()
	t.Logf("%d requests answered across %d handovers", ok, generations)
	for _, err := range failures {
		t.Error("request failed:", err)
	}
}

// TestPipeForeignDACL: a pipe whose DACL admits only SYSTEM (not us, not
// Administrators even if we are elevated: the default owner only gets
// READ_CONTROL and WRITE_DAC). Opening it must
// fail with os.ErrPermission, and adding an instance to it with
// ErrNameInUse (this is how another user's service holding the name shows).
// Wine 8.0 does not check access on named pipes at all, so under Wine this
// only runs as far as it can; real Windows confirms the refusal.
func TestPipeForeignDACL(t *testing.T) {
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		t.Fatal(err)
	}
	if system, _ := windows.CreateWellKnownSid(windows.WinLocalSystemSid); tu.User.Sid.Equals(system) {
		t.Skip("running as SYSTEM: the foreign DACL would admit us")
	}
	name := pipeName(t, "foreign")
	path, _ := Address(name)
	l, err := winpipe.Listen(path, "D:P(A;;FA;;;SY)")
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
	c, _, err := dial(ctx, name)
	if err == nil {
		c.Close()
		if underWine() {
			t.Skip("Wine does not enforce the DACL of named pipes; real Windows must refuse here")
		}
		t.Fatal("opened a pipe whose DACL admits only SYSTEM")
	}
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("dial: %v, want os.ErrPermission", err)
	}
	if ln, err := Listen(name); !errors.Is(err, ErrNameInUse) {
		if ln != nil {
			ln.Close()
		}
		t.Errorf("Listen on a name held under a foreign DACL: %v, want ErrNameInUse", err)
	}
}
