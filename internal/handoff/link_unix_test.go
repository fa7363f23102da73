//go:build unix

package handoff

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// The link carries the state and a named file both ways between two real
// sockets, and the drain request reaches the generation.
func TestLinkRoundTrip(t *testing.T) {
	dir, err := os.MkdirTemp("", "blink")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "gen2.link")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := os.CreateTemp(dir, "events")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// Supervisor side.
	type accepted struct {
		l   *LinkConn
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		l, hello, err := AcceptLink(context.Background(), ln)
		if err == nil && hello.PID != os.Getpid() {
			err = errors.New("wrong pid in hello")
		}
		if err == nil {
			err = l.Give(&Handed{Msg: Handoff{Generation: 2}, State: []byte("counter=41"),
				Items: []Item{{Desc: FileDesc{Kind: KindFile, Name: "events"}, File: f}}})
		}
		acc <- accepted{l, err}
	}()

	// Generation side.
	t.Setenv(EnvLink, path)
	gen, handed, err := DialLink(5*time.Second, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	a := <-acc
	if a.err != nil {
		t.Fatal(a.err)
	}
	sup := a.l
	defer sup.Close()
	if handed.Msg.Generation != 2 || string(handed.State) != "counter=41" || len(handed.Items) != 1 || handed.Items[0].Desc.Name != "events" {
		t.Fatalf("handed: %+v state %q", handed.Msg, handed.State)
	}
	// The descriptor is the same open file: a write through it lands in f.
	if _, err := handed.Items[0].File.WriteString("from gen 2\n"); err != nil {
		t.Fatal(err)
	}
	if _, ok := os.LookupEnv(EnvLink); ok {
		t.Error("EnvLink still set: the app's own children would believe they are supervised")
	}

	drained := make(chan struct{})
	var failState atomic.Bool
	go gen.Serve(func() (*Handed, error) {
		if failState.Load() {
			return nil, errors.New("cannot marshal")
		}
		return &Handed{State: []byte("counter=42"), Items: handed.Items}, nil
	}, func() { close(drained) }, nil)

	back, err := sup.Take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if string(back.State) != "counter=42" || len(back.Items) != 1 {
		t.Fatalf("taken: state %q, %d files", back.State, len(back.Items))
	}
	if _, err := back.Items[0].File.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(back.Items[0].File)
	if string(b) != "from gen 2\n" {
		t.Fatalf("the file that came back reads %q", b)
	}

	failState.Store(true)
	if _, err := sup.Take(context.Background()); !errors.Is(err, ErrNoState) {
		t.Fatalf("Take with a failing StateFunc: %v, want ErrNoState", err)
	}
	if err := sup.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-drained
}

// A request that times out closes the link: its late answer is never read
// as the answer to the next request.
func TestLinkTimeoutClosesTheLink(t *testing.T) {
	sup, gen := linkPair(t)
	release := make(chan struct{})
	n := 0
	go gen.Serve(func() (*Handed, error) {
		n++
		if n == 1 {
			<-release // the first answer comes late
		}
		return &Handed{State: []byte{byte('0' + n)}}, nil
	}, func() {}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := sup.Take(ctx)
	cancel()
	if err == nil {
		t.Fatal("Take with a StateFunc slower than its deadline succeeded")
	}
	close(release)
	h, err := sup.Take(context.Background())
	if err == nil {
		t.Fatalf("Take after a timed-out one returned state %q (the late answer to the first request)", h.State)
	}
	if !sup.Broken() {
		t.Error("the link is not marked broken")
	}
	if err := sup.Drain(context.Background()); err == nil {
		t.Error("Drain over a broken link reported success")
	}
}

// linkPair connects a supervisor end and a generation end over a real
// unix socket.
func linkPair(t *testing.T) (sup, gen *LinkConn) {
	t.Helper()
	dir, err := os.MkdirTemp("", "blink")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "g.link")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		var err error
		sup, _, err = AcceptLink(context.Background(), ln)
		if err == nil {
			err = sup.Give(&Handed{})
		}
		done <- err
	}()
	t.Setenv(EnvLink, path)
	gen, _, err = DialLink(5*time.Second, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sup.Close(); gen.Close() })
	return sup, gen
}

// A pass given up before it could be sent (its context ended while
// another exchange held the link) sends nothing: ErrConnsNotTaken, so the
// caller places the connections elsewhere, and the link stays usable. It
// used to write past the deadline, break the link and leave the caller
// unable to tell whether the connections had gone.
func TestPassConnsGivenUpSendsNothing(t *testing.T) {
	sup, _ := linkPair(t)
	sup.conns = true // a generation that takes connections
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err := sup.PassConns(ctx, "tcp", "127.0.0.1:1", []*os.File{f})
	if n != 0 || !errors.Is(err, ErrConnsNotTaken) {
		t.Fatalf("PassConns with its context ended: %d taken, %v; want 0 and ErrConnsNotTaken", n, err)
	}
	if sup.Broken() {
		t.Fatal("the link is broken by a pass that sent nothing")
	}
}
