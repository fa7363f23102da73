package httpdrain

import (
	"net/http"
	"testing"
)

// A client that sends its next request as soon as it has an answer can
// be quicker than the drain every time (under Wine it was, in about one
// run in three): the drain never sees its conn idle, never finds the
// request arriving, and the conn stayed here, answered keep-alive, until
// the drain's deadline cut its request in flight. Each request that makes
// such a conn active during the drain is a miss; after maxBusyMisses the
// answers close it.
func TestRequestsDuringDrainEndKeepAlive(t *testing.T) {
	s := &Server{}
	m := newMigratedConn(nil, s, nil)
	m.setState(http.StateNew)
	m.markHTTP1()
	m.setState(http.StateActive)
	m.setState(http.StateIdle)
	m.setState(http.StateActive) // before the drain: not a miss
	s.draining.Store(true)
	for i := range maxBusyMisses {
		m.setState(http.StateIdle)
		m.setState(http.StateActive) // the client was first again
		if !m.keepsAlive() {
			t.Fatalf("closed after %d requests during the drain; want %d kept alive", i+1, maxBusyMisses)
		}
	}
	m.setState(http.StateIdle)
	m.setState(http.StateActive)
	if m.keepsAlive() {
		t.Fatalf("still kept alive after %d requests came in while the drain waited", maxBusyMisses+1)
	}
}
