package baton

import (
	"errors"
	"os"
	"testing"
	"time"
)

// On Windows too Listen returns baton's listener in a first generation
// (later generations get it as well: the gate), and its deadlines work
// as on Unix (baton's winsock listener has them: the library wakes a
// pending Accept with one to hand over a connection passed to it).
func TestListenTypeAndDeadlineOnWindows(t *testing.T) {
	u := newTestUpgrader(t, Options{})
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl, ok := ln.(*gatedListener)
	if !ok {
		t.Fatalf("Listen returned a %T", ln)
	}
	if err := gl.SetDeadline(time.Now()); err != nil {
		t.Fatalf("SetDeadline: %v", err)
	}
	if c, err := gl.Accept(); !errors.Is(err, os.ErrDeadlineExceeded) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("Accept after a deadline in the past: %v, want os.ErrDeadlineExceeded", err)
	}
}
