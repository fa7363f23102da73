package baton

import (
	"errors"
	"testing"
	"time"
)

// On Windows too Listen returns baton's listener in a first generation
// (later generations get it as well: the gate). Its SetDeadline says that
// baton's winsock listener has no deadlines.
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
	if err := gl.SetDeadline(time.Now()); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("SetDeadline: %v, want ErrUnsupported", err)
	}
}
