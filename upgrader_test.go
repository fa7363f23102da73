package baton

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-go/baton/events"
)

func newTestUpgrader(t *testing.T, opts Options) *Upgrader {
	t.Helper()
	opts.UpgradeSignal = NoSignal
	u, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Stop)
	return u
}

func TestUpgradeBeforeReadyAndAfterStop(t *testing.T) {
	u := newTestUpgrader(t, Options{})
	if _, err := u.Upgrade(context.Background()); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Upgrade before Ready: %v, want ErrNotReady", err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	u.Stop()
	if _, err := u.Upgrade(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Upgrade after Stop: %v, want ErrStopped", err)
	}
	select {
	case <-u.Exit():
	default:
		t.Fatal("Exit not closed after Stop")
	}
	if _, err := u.Listen("tcp", "127.0.0.1:0"); !errors.Is(err, ErrStopped) {
		t.Fatalf("Listen after Stop: %v", err)
	}
}

func TestStateTooLargeIsRefusedBeforeStarting(t *testing.T) {
	u := newTestUpgrader(t, Options{
		Binary:       "/bin/true", // must never be started
		MaxStateSize: 10,
		StateFunc:    func() ([]byte, error) { return make([]byte, 11), nil },
	})
	u.Ready()
	_, err := u.Upgrade(context.Background())
	if !errors.Is(err, ErrStateTooLarge) {
		t.Fatalf("Upgrade: %v, want ErrStateTooLarge", err)
	}
	if st := u.Status(); st.Phase != PhaseServing || st.Last == nil || st.Last.Code != "state" {
		t.Fatalf("status after the refusal: %+v", st)
	}
}

func TestBadOptions(t *testing.T) {
	if _, err := New(Options{Name: "../x", UpgradeSignal: NoSignal}); err == nil || !strings.Contains(err.Error(), "invalid control endpoint name") {
		t.Fatalf("bad name accepted: %v", err)
	}
	u := newTestUpgrader(t, Options{})
	if _, err := u.Listen("udp", ":0"); err == nil {
		t.Fatal("Listen accepted udp")
	}
	if _, err := u.ListenPacket("tcp", ":0"); err == nil {
		t.Fatal("ListenPacket accepted tcp")
	}
	if _, err := u.File("", nil); err == nil {
		t.Fatal("File accepted an empty name")
	}
}

// In a generation that is not the first (here: under baton run), Accept
// waits for Ready; Stop before Ready releases it.
func TestAcceptWaitsForReady(t *testing.T) {
	t.Setenv(envSupervisor, "test")
	for _, ready := range []bool{true, false} {
		u := newTestUpgrader(t, Options{})
		ln, err := u.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		accepted := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if c != nil {
				c.Close()
			}
			accepted <- err
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		select {
		case err := <-accepted:
			t.Fatalf("Accept returned before Ready: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if ready {
			if err := u.Ready(); err != nil {
				t.Fatal(err)
			}
			if err := <-accepted; err != nil {
				t.Fatalf("Accept after Ready: %v", err)
			}
		} else {
			u.Stop()
			if err := <-accepted; !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Accept after Stop: %v, want net.ErrClosed", err)
			}
		}
	}
}

// TestStopIsRecorded: the serving generation's Stop is one stop operation
// in the records subscribers (and the events file) get, as under baton run.
func TestStopIsRecorded(t *testing.T) {
	u := newTestUpgrader(t, Options{})
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []events.Record
	cancel := u.Subscribe(func(r events.Record) {
		mu.Lock()
		got = append(got, r)
		mu.Unlock()
	})
	defer cancel()
	u.Stop()
	mu.Lock()
	defer mu.Unlock()
	for _, r := range got {
		if r.Name == "baton.stopping" && r.Operation == "stop" && r.Deployment != "" && r.PID == os.Getpid() {
			return
		}
	}
	t.Fatalf("no stop record among %+v", got)
}
