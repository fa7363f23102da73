// Package lifecycle is the one generation lifecycle of baton: how a
// generation is started, becomes ready, takes over, drains and exits, and
// what happens when any step fails. The library (one generation handing
// over to its child), `baton run` on Unix and on Windows, and later proxy
// mode all run this code; what differs between them (how a process is
// started and handed its sockets, how it is told to drain, how it is
// killed) sits behind the Platform interface.
//
// States of one generation and the events that move it (Transition is the
// only place where a state changes):
//
//	Starting --ready--> Ready --commit--> Serving --drain--> Draining --exit--> Exited
//	   |                  |                  |
//	   +--fail/exit--> Failed <--fail/exit---+          Serving --exit--> Exited (a crash)
//
// An Engine holds the generations of one service: the serving one, the
// previous one (what a rollback runs again) and those still draining. It
// runs one operation at a time (upgrade, rollback, crash restart); a second
// request gets ErrBusy, a stop cancels what runs and drains everything.
package lifecycle

import "fmt"

// State is where a generation is in its life.
type State int

const (
	Starting State = iota // started, not ready yet
	Ready                 // said it is ready; not handed over yet
	Serving               // the service's current generation
	Draining              // replaced: finishing what it has, then exits
	Exited                // gone after it served
	Failed                // gone (or killed) before it served
)

var stateNames = [...]string{"starting", "ready", "serving", "draining", "exited", "failed"}

func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("state(%d)", int(s))
	}
	return stateNames[s]
}

// Final reports whether no event moves s any more.
func (s State) Final() bool { return s == Exited || s == Failed }

// Event moves a generation from one state to the next.
type Event int

const (
	EvReady  Event = iota // the process said it is ready
	EvCommit              // the handover is done: it serves
	EvDrain               // replaced (or stopped): drain
	EvExit                // the process is gone
	EvFail                // called off before it served (killed)
)

var eventNames = [...]string{"ready", "commit", "drain", "exit", "fail"}

func (e Event) String() string {
	if e < 0 || int(e) >= len(eventNames) {
		return fmt.Sprintf("event(%d)", int(e))
	}
	return eventNames[e]
}

// Transition is the lifecycle's state table: the state that event ev
// leads to from s, or an error when ev cannot happen in s.
func Transition(s State, ev Event) (State, error) {
	switch {
	case s == Starting && ev == EvReady:
		return Ready, nil
	case (s == Starting || s == Ready) && ev == EvCommit:
		// Readiness may be known only at the commit (a delay, a probe).
		return Serving, nil
	case (s == Starting || s == Ready) && (ev == EvFail || ev == EvExit):
		return Failed, nil
	case s == Serving && ev == EvDrain:
		return Draining, nil
	case (s == Serving || s == Draining) && ev == EvExit:
		return Exited, nil
	case s.Final() && (ev == EvExit || ev == EvFail || ev == EvDrain):
		return s, nil // late news about a process already gone
	case s == Draining && ev == EvDrain:
		return s, nil
	}
	return s, fmt.Errorf("lifecycle: no transition from %s on %s", s, ev)
}

// Phase is what the engine as a whole is doing, for status.
type Phase string

const (
	PhaseStarting    Phase = "starting"  // the first generation is starting
	PhaseServing     Phase = "serving"   // a generation serves; nothing runs
	PhaseUpgrading   Phase = "upgrading" // an upgrade runs
	PhaseProbation   Phase = "probation" // the new generation is on probation
	PhaseRollingBack Phase = "rolling_back"
	PhaseRestarting  Phase = "restarting" // the serving generation died; a new one is starting
	PhaseStopping    Phase = "stopping"
	PhaseStopped     Phase = "stopped"
)
