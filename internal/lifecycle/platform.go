package lifecycle

import (
	"context"
	"time"
)

// Platform starts generations. Everything that depends on how a host runs
// its processes is behind it and Proc: the library forks its own child and
// hands it its sockets; the supervisor starts the app with socket
// activation (Unix) or as a handoff parent (Windows).
type Platform interface {
	// Start starts a new generation and returns at once (readiness is
	// waited for with Proc.WaitReady). The returned error should wrap one
	// of the contract sentinels (ErrBinary, ErrNoState, ...).
	Start(ctx context.Context, req StartRequest) (Proc, error)
}

// Reason says why a generation is started.
type Reason string

const (
	ReasonStart    Reason = "start"    // the service's first generation
	ReasonUpgrade  Reason = "upgrade"  // the binary on disk now
	ReasonRollback Reason = "rollback" // the previous generation's binary again
	ReasonRestart  Reason = "restart"  // the serving generation died
	ReasonFallback Reason = "fallback" // it kept crashing: the release that served before it
)

// StartRequest says what to start.
type StartRequest struct {
	N      int    // the new generation's number
	Reason Reason //
	// Serving is the generation that serves now (nil for a first start or
	// a restart after a crash): the platform hands its state (state blob,
	// named files) to the new one where it can.
	Serving Proc
	// RunAgain, when set, is the generation whose binary runs again (a
	// rollback, or a restart of what crashed); nil means the binary that is
	// installed now.
	RunAgain Proc
	// WithoutState asks for a start without the serving generation's
	// state (a rollback retried after the older binary refused a newer
	// generation's state).
	WithoutState bool
}

// Proc is one generation's process as the platform sees it.
type Proc interface {
	PID() int
	Binary() string // the path it was started as
	// WaitReady returns once the process is ready (with the part of the
	// time that was the app's own start-up, where known), or an error if it
	// exits, refuses or ctx ends first. It does not kill it.
	WaitReady(ctx context.Context) (ReadyInfo, error)
	// Commit completes the handover: from now on the new generation owns
	// the service's sockets (the library's go-ahead). An error means it did
	// not take over: it is aborted and the serving generation stays.
	Commit() error
	// Abort kills a generation that did not take over and waits (bounded)
	// until it is gone.
	Abort(reason string)
	// Drain tells a replaced generation to stop accepting and finish what
	// it has; it does not wait. The engine kills it (Kill) if it has not
	// exited when the drain deadline passes.
	Drain()
	// Kill ends the process at once.
	Kill()
	// Exited is closed when the process is gone; Err then says how it
	// ended (a contract.ExitError for a process that exited).
	Exited() <-chan struct{}
	Err() error
	// Release frees what the platform kept for running this generation
	// again (a saved copy of its binary); called once no rollback can
	// need it.
	Release()
}

// ReadyInfo is what a generation said when it got ready.
type ReadyInfo struct {
	AppStartup time.Duration // its own start-up, from its start to Ready (0 if unknown)
}

// Prober checks a serving generation's health during its probation. A
// platform that can probe implements it; otherwise only an exit fails a
// probation.
type Prober interface {
	Healthy(ctx context.Context, p Proc) bool
}

// ChoiceEnder is a Proc that can tell an end it chose (it handed over to
// its own successor, or was told to stop) from a crash. A generation that
// ends by choice during its probation has not failed it, and its
// probation ends as soon as it says so (it may drain a while longer).
// Without it, every exit during the probation is a failure (right for the
// supervisor, which drives every handover itself).
type ChoiceEnder interface {
	// Chose is closed once the process has said that it ends by choice.
	Chose() <-chan struct{}
	// EndedByChoice is called once Exited is closed.
	EndedByChoice() bool
}
