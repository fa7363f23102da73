package httpdrain

import (
	"net/http"
	"testing"
)

// A client that sends its next request as soon as it has an answer can
// be quicker than the drain every time (under Wine it was, in about one
// run in three): the drain never sees its conn idle, never finds the
// request arriving, and the conn stayed here, answered keep-alive, until
// the drain's deadline cut its request in flight. A request that comes in
// busyGiveUp after the drain could first have taken the conn idle ends
// its keep-alive; before that it is kept, to be passed on.
func TestRequestsLateInDrainEndKeepAlive(t *testing.T) {
	newConn := func(s *Server) *migratedConn {
		m := newMigratedConn(nil, s, nil)
		m.setState(http.StateNew)
		m.markHTTP1()
		m.setState(http.StateActive)
		return m
	}
	t.Run("busy at the drain start", func(t *testing.T) {
		s := &Server{}
		m := newConn(s)
		s.drainStarted.Store(monoNow() - 10*int64(busyGiveUp)) // a long request was under way
		s.draining.Store(true)
		for range 5 {
			m.setState(http.StateIdle) // the drain's first chance
			m.setState(http.StateActive)
			if !m.keepsAlive() {
				t.Fatal("closed right after its first chance to be taken idle")
			}
		}
		m.idleInDrain -= int64(busyGiveUp) // that chance came a while ago
		m.setState(http.StateIdle)
		m.setState(http.StateActive)
		if m.keepsAlive() {
			t.Fatalf("still kept alive %v after its first chance", busyGiveUp)
		}
	})
	t.Run("idle at the drain start", func(t *testing.T) {
		s := &Server{}
		m := newConn(s)
		m.setState(http.StateIdle)
		s.drainStarted.Store(monoNow())
		s.draining.Store(true)
		m.setState(http.StateActive)
		if !m.keepsAlive() {
			t.Fatal("closed at once")
		}
		s2 := &Server{}
		m2 := newConn(s2)
		m2.setState(http.StateIdle)
		s2.drainStarted.Store(monoNow() - int64(busyGiveUp))
		s2.draining.Store(true)
		m2.setState(http.StateActive)
		if m2.keepsAlive() {
			t.Fatalf("idle %v into the drain and still kept alive", busyGiveUp)
		}
	})
}
