package httpdrain_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/baton-go/baton/httpdrain"
)

// TestNoIdleGrace: a negative IdleGrace means no grace: an idle keep-alive
// conn is closed as soon as the drain gets to it, and the drain does not
// wait at all in step 4.
func TestNoIdleGrace(t *testing.T) {
	ts := start(t, &http.Server{Handler: http.HandlerFunc(okHandler)}, httpdrain.Options{IdleGrace: -1})
	c := dial(t, ts.addr)
	c.mustDo(t, "GET", "/", "")

	begin := time.Now()
	rep, err := ts.Drain(ctxTimeout(t, testTimeout))
	checkClean(t, rep, err)
	if rep.ConnsAtStart != 1 || rep.IdleWaited != 0 {
		t.Errorf("want 1 idle conn and no grace, got %+v", rep)
	}
	// Not a timing assertion on the drain itself: only "far below the
	// default grace", which is what "no grace" must rule out.
	if d := time.Since(begin); d >= httpdrain.DefaultIdleGrace {
		t.Errorf("Drain took %v with IdleGrace < 0", d)
	}
	c.expectClosed(t)
}

// TestZeroIdleGraceIsTheDefault: the zero value keeps an idle conn for
// DefaultIdleGrace (it does not mean "no grace").
func TestZeroIdleGraceIsTheDefault(t *testing.T) {
	ts := start(t, &http.Server{Handler: http.HandlerFunc(okHandler)}, httpdrain.Options{})
	c := dial(t, ts.addr)
	c.mustDo(t, "GET", "/", "")

	rep, err := ts.Drain(ctxTimeout(t, testTimeout))
	checkClean(t, rep, err)
	if rep.ConnsAtStart != 1 || rep.IdleWaited < httpdrain.DefaultIdleGrace {
		t.Errorf("want 1 conn kept for DefaultIdleGrace (%v), got %+v", httpdrain.DefaultIdleGrace, rep)
	}
	c.expectClosed(t)
}
