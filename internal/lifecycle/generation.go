package lifecycle

import (
	"log/slog"
	"sync"
	"time"
)

// Generation is one generation of the service in the engine.
type Generation struct {
	N       int
	Proc    Proc
	Reason  Reason
	Started time.Time

	mu         sync.Mutex
	state      State
	readyAfter time.Duration
	appStartup time.Duration
	serving    time.Time // when it took over
	rejected   bool      // failed its probation: never run again
}

func (g *Generation) reject() {
	g.mu.Lock()
	g.rejected = true
	g.mu.Unlock()
}

func (g *Generation) isRejected() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.rejected
}

// State returns where g is in its life.
func (g *Generation) State() State {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state
}

// apply moves g by ev through Transition; an impossible event is logged
// and ignored (it is a bug, never a reason to crash a service).
func (g *Generation) apply(ev Event, log *slog.Logger) State {
	g.mu.Lock()
	defer g.mu.Unlock()
	next, err := Transition(g.state, ev)
	if err != nil {
		log.Error("lifecycle bug", "gen", g.N, "err", err)
		return g.state
	}
	g.state = next
	return next
}

func (g *Generation) servingAt(t time.Time) {
	g.mu.Lock()
	g.serving = t
	g.mu.Unlock()
}

// servedFor is how long g served (0 if it never did).
func (g *Generation) servedFor() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.serving.IsZero() {
		return 0
	}
	return time.Since(g.serving)
}

// View is a copy of what is known about a generation, for status.
type View struct {
	N          int
	PID        int
	Binary     string
	State      State
	Reason     Reason
	Started    time.Time
	ReadyAfter time.Duration
	AppStartup time.Duration
	Proc       Proc
}

func (g *Generation) view() *View {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return &View{N: g.N, PID: g.Proc.PID(), Binary: g.Proc.Binary(), State: g.state, Reason: g.Reason, Started: g.Started,
		ReadyAfter: g.readyAfter, AppStartup: g.appStartup, Proc: g.Proc}
}

// Snapshot is the engine's state, for status.
type Snapshot struct {
	Phase    Phase
	Current  *View // nil before the first generation serves
	Previous *View
	Starting *View // a generation being started, or handed over to (a canary in proxy mode), by the operation under way
	Draining []View
	Restarts int // generations started to replace a dead one
	Last     *Outcome
}

// Snapshot returns the engine's state.
func (e *Engine) Snapshot() Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Snapshot{Phase: e.phase, Current: e.current.view(), Previous: e.previous.view(), Starting: e.starting.view(), Restarts: e.restarts, Last: e.last}
	if s.Starting == nil && e.committing != nil {
		s.Starting = e.committing.view()
	}
	for _, g := range e.draining {
		select {
		case <-g.Proc.Exited():
		default:
			s.Draining = append(s.Draining, *g.view())
		}
	}
	return s
}

// NoticeKind says what happened.
type NoticeKind string

// What the engine reports through Config.Notify.
const (
	NoticeUpgrading       NoticeKind = "upgrade_started"
	NoticeStarted         NoticeKind = "generation_started"
	NoticeReady           NoticeKind = "generation_ready"
	NoticeStartFailed     NoticeKind = "generation_failed"
	NoticeSwitched        NoticeKind = "switched"
	NoticeServing         NoticeKind = "serving" // a first or restarted generation serves
	NoticeFailed          NoticeKind = "upgrade_failed"
	NoticeProbationPassed NoticeKind = "probation_passed"
	NoticeProbationFailed NoticeKind = "probation_failed"
	NoticeRolledBack      NoticeKind = "rolled_back"
	NoticeCrashed         NoticeKind = "crashed"
	NoticeGaveUp          NoticeKind = "gave_up"
	NoticeFallingBack     NoticeKind = "falling_back" // Gen kept crashing; the previous release runs again
	NoticeDrained         NoticeKind = "drained"
	NoticeKilled          NoticeKind = "killed_at_drain_deadline"
	NoticeStopping        NoticeKind = "stopping"
)

// Notice is one thing that happened to the service.
type Notice struct {
	Kind NoticeKind
	At   time.Time
	Gen  *View // the generation it is about, if any
	Err  error
	// Op and Deployment name the operation the notice belongs to (an
	// upgrade, rollback, restart or stop; a drain belongs to the switch
	// that started it): one Deployment id per operation, unique across
	// runs. Empty for notices outside any operation.
	Op         Op
	Deployment string
	// Took is how long the step this notice ends took: Started: from the
	// operation's start; Ready: from the start of the process; Switched:
	// the handover (ready to committed); Drained and Killed: the drain;
	// Failed, RolledBack, ProbationPassed: the operation so far. Zero
	// where it does not apply.
	Took time.Duration
}
