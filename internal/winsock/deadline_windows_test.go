package winsock

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestListenerDeadline: Accept past the deadline fails with a timeout, a
// deadline moved into the past wakes a blocked Accept (as the library does
// to hand it a connection passed by the previous generation), and Accept
// works again once the deadline is cleared.
func TestListenerDeadline(t *testing.T) {
	l := listenLoopback(t)
	if err := l.SetDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := l.Accept()
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Accept past the deadline: %v, want a timeout", err)
	}
	l.SetDeadline(time.Time{})
	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	l.SetDeadline(time.Now())
	select {
	case err := <-accepted:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked Accept after SetDeadline(now): %v", err)
		}
	case <-time.After(bound):
		t.Fatal("SetDeadline did not wake a blocked Accept")
	}
	l.SetDeadline(time.Time{})
	acceptOne(t, l)
	l.Close()
	if err := l.SetDeadline(time.Time{}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("SetDeadline after Close: %v, want net.ErrClosed", err)
	}
}
