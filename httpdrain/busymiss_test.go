package httpdrain

import (
	"net/http"
	"testing"
	"time"
)

// A client that sends its next request as soon as it has an answer can
// be quicker than the drain every time (under Wine it was, in about one
// run in three): the drain never sees its conn idle, never finds the
// request arriving, and the conn stayed here, answered keep-alive, until
// the drain's deadline cut its request in flight. Once the drain has run
// busyGiveUp, such a conn's next request ends its keep-alive; before
// that it is kept, to be passed on.
func TestRequestsLateInDrainEndKeepAlive(t *testing.T) {
	s := &Server{}
	m := newMigratedConn(nil, s, nil)
	m.setState(http.StateNew)
	m.markHTTP1()
	m.setState(http.StateActive)
	m.setState(http.StateIdle)
	m.setState(http.StateActive) // no drain yet

	s.drainStarted.Store(time.Now().UnixNano())
	s.draining.Store(true)
	for range 5 {
		m.setState(http.StateIdle)
		m.setState(http.StateActive) // the client was first, early in the drain
	}
	if !m.keepsAlive() {
		t.Fatal("closed early in the drain: it may still be taken idle")
	}

	s.drainStarted.Store(time.Now().Add(-busyGiveUp).UnixNano())
	m.setState(http.StateIdle)
	m.setState(http.StateActive) // first again, busyGiveUp into the drain
	if m.keepsAlive() {
		t.Fatalf("still kept alive %v into the drain", busyGiveUp)
	}
}
