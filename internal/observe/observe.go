// Package observe turns the lifecycle engine's notices into what operators
// see: event records (package events) today, and it is the one place the
// mapping lives for every consumer (the supervisor, the library).
package observe

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/lifecycle"
)

// Record is the event record of a notice.
func Record(n lifecycle.Notice) events.Record {
	r := events.Record{
		Time:       n.At,
		Name:       "baton." + string(n.Kind),
		Deployment: n.Deployment,
		Operation:  string(n.Op),
		Duration:   n.Took.Seconds(),
	}
	if g := n.Gen; g != nil {
		r.PID, r.Generation, r.State, r.Reason, r.Binary = g.PID, g.N, g.State.String(), string(g.Reason), g.Binary
	}
	if n.Err != nil {
		r.ErrorType, r.Error = contract.CodeOf(n.Err), n.Err.Error()
	}
	r.Message = message(n)
	return r
}

func message(n lifecycle.Notice) string {
	gen := ""
	if g := n.Gen; g != nil {
		gen = fmt.Sprintf("generation %d (pid %d)", g.N, g.PID)
	}
	switch n.Kind {
	case lifecycle.NoticeUpgrading:
		return "upgrade started"
	case lifecycle.NoticeStarted:
		return gen + " started"
	case lifecycle.NoticeReady:
		return gen + " ready"
	case lifecycle.NoticeSwitched:
		return gen + " took over"
	case lifecycle.NoticeDrained:
		return gen + " drained and exited"
	}
	if gen != "" {
		return string(n.Kind) + ": " + gen
	}
	return string(n.Kind)
}

// Recorder writes every notice to an events log; it never fails the
// service (a write error is logged once per kind of error).
type Recorder struct {
	Log    *events.Log
	Logger *slog.Logger
	warned sync.Once
}

// Notice records n.
func (r *Recorder) Notice(n lifecycle.Notice) {
	if r == nil || r.Log == nil {
		return
	}
	if err := r.Log.Emit(Record(n)); err != nil {
		r.warned.Do(func() {
			r.Logger.Warn("cannot write the events file; events are not recorded", "path", r.Log.Path(), "err", err)
		})
	}
}
