// Package winsvc is the state logic of baton's Windows service, written
// without the Service Control Manager so that it is tested on every OS:
// the service reports START_PENDING (with checkpoints and wait hints) until
// the supervisor's first generation serves, then RUNNING, and stays RUNNING
// through every upgrade, rollback and crash restart (the supervisor's
// business); STOP and SHUTDOWN drain it under STOP_PENDING, then STOPPED
// with an exit code that says why. Custom control codes 128 (upgrade), 129
// (rollback) and 130 (reopen the log file) are run beside the loop and
// their outcome logged.
//
// cmd/baton's service_windows.go adapts Handler to svc.Handler.
package winsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/baton-go/baton/internal/contract"
)

// State is a service state as the SCM knows it (the values are svc.State's).
type State uint32

// The states this handler reports.
const (
	Stopped      State = 1
	StartPending State = 2
	StopPending  State = 3
	Running      State = 4
)

func (s State) String() string {
	switch s {
	case Stopped:
		return "STOPPED"
	case StartPending:
		return "START_PENDING"
	case StopPending:
		return "STOP_PENDING"
	case Running:
		return "RUNNING"
	}
	return fmt.Sprintf("STATE_%d", uint32(s))
}

// Status is one status report to the SCM.
type Status struct {
	State State
	// Accepts: RUNNING accepts Stop and Shutdown (the custom codes need no
	// flag); the pending states accept nothing.
	AcceptStop bool
	CheckPoint uint32
	WaitHint   time.Duration
}

// Cmd is a control request from the SCM.
type Cmd uint32

// The requests the handler knows (svc.Cmd's values).
const (
	CmdStop        Cmd = 1
	CmdInterrogate Cmd = 4
	CmdShutdown    Cmd = 5
	// Custom control codes (`sc control NAME 128`, or `baton service
	// control --name NAME 128`).
	CmdUpgrade   Cmd = 128
	CmdRollback  Cmd = 129
	CmdReopenLog Cmd = 130
)

// Supervisor is what the service runs (*supervisor.Supervisor).
type Supervisor interface {
	Run(ctx context.Context) error
	Serving() <-chan struct{}
	Stop()
	Upgrade(ctx context.Context) (contract.UpgradeResult, error)
	Rollback(ctx context.Context) (contract.UpgradeResult, error)
	ReopenLog() error
}

// Service-specific exit codes reported with STOPPED when the service did
// not stop because it was asked to (the SCM shows them as "service
// specific error N"; a failure starts the recovery actions). Run's errors
// map to the CLI's exit codes (contract.ExitCode), so 1 means the app kept
// failing (gave up), 5 an internal error.
const (
	// ExitStartFailed: the supervisor could not be set up (the sockets,
	// the log file, the control endpoint).
	ExitStartFailed uint32 = 10
	// ExitDrainCut: a system shutdown did not leave the time to drain;
	// the generations were ended with the service's process.
	ExitDrainCut uint32 = 11
)

// Handler runs one service session: Execute is svc.Handler's Execute
// without the SCM types.
type Handler struct {
	// New sets up the supervisor (its error ends the service at once,
	// ExitStartFailed).
	New func() (Supervisor, error)
	// Report sends a status to the SCM.
	Report func(Status)
	// Log receives the lifecycle events (started, control codes and their
	// outcome, stopping, stopped); the Windows service tees it to the
	// Event Log.
	Log *slog.Logger
	// WaitHint is the wait hint of the pending states (default 10s); a
	// checkpoint is reported every WaitHint/4.
	WaitHint time.Duration
	// ShutdownBudget bounds the drain at a system shutdown (default 18s:
	// Windows gives services about 20s by default); after it the service
	// reports STOPPED (ExitDrainCut) and its process ends, taking the
	// generations with its job object.
	ShutdownBudget time.Duration
	// OpTimeout bounds an upgrade or rollback asked by a control code
	// (default 10 minutes).
	OpTimeout time.Duration
}

// Execute runs the service until it stops and returns the exit code to
// report with STOPPED: specific says it is service-specific (else a Win32
// code, 0 after a requested stop).
func (h *Handler) Execute(reqs <-chan Cmd) (specific bool, code uint32) {
	hint := h.WaitHint
	if hint <= 0 {
		hint = 10 * time.Second
	}
	shutdownBudget := h.ShutdownBudget
	if shutdownBudget <= 0 {
		shutdownBudget = 18 * time.Second
	}
	opTimeout := h.OpTimeout
	if opTimeout <= 0 {
		opTimeout = 10 * time.Minute
	}
	log := h.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cur := Status{State: StartPending, CheckPoint: 1, WaitHint: hint}
	report := func(s Status) {
		cur = s
		h.Report(s)
	}
	report(cur)

	sup, err := h.New()
	if err != nil {
		log.Error("the service cannot start", "err", err)
		report(Status{State: Stopped})
		return true, ExitStartFailed
	}
	done := make(chan error, 1)
	go func() { done <- sup.Run(context.Background()) }()

	tick := time.NewTicker(hint / 4)
	defer tick.Stop()
	var ops sync.WaitGroup
	defer func() {
		// A control-code operation still running was canceled with the
		// service; it gets a short while to write its outcome, never the
		// service's stop past its budget.
		finished := make(chan struct{})
		go func() { ops.Wait(); close(finished) }()
		t := time.NewTimer(2 * time.Second)
		defer t.Stop()
		select {
		case <-finished:
		case <-t.C:
			log.Warn("a control-code operation was still running when the service stopped")
		}
	}()
	opCtx, cancelOps := context.WithCancel(context.Background())
	defer cancelOps()

	// finish reports STOPPED for Run's outcome.
	finish := func(err error, requested bool) (bool, uint32) {
		cancelOps()
		if err != nil {
			code := uint32(contract.ExitCode(contract.CodeOf(err)))
			if errors.Is(err, contract.ErrGaveUp) {
				code = uint32(contract.ExitFailed)
			}
			log.Error("service stopped: the supervisor failed", "err", err, "exit_code", code)
			report(Status{State: Stopped})
			return true, code
		}
		if !requested {
			log.Info("service stopped (baton stop)")
		} else {
			log.Info("service stopped")
		}
		report(Status{State: Stopped})
		return false, 0
	}

	// Starting: until the first generation serves.
	serving := sup.Serving()
starting:
	for {
		select {
		case <-serving:
			break starting
		case err := <-done:
			return finish(err, false)
		case <-tick.C:
			cur.CheckPoint++
			report(cur)
		case c := <-reqs:
			switch c {
			case CmdInterrogate:
				report(cur)
			case CmdStop, CmdShutdown:
				return h.stop(sup, c, done, tick, report, cur.CheckPoint, hint, shutdownBudget, log, finish)
			default:
				log.Warn("control code ignored: the service is starting", "code", uint32(c))
			}
		}
	}
	report(Status{State: Running, AcceptStop: true})
	log.Info("service running: the first generation serves")

	for {
		select {
		case err := <-done:
			// baton stop through the pipe (nil) or the app kept failing.
			return finish(err, false)
		case c := <-reqs:
			switch c {
			case CmdInterrogate:
				report(cur)
			case CmdStop, CmdShutdown:
				return h.stop(sup, c, done, tick, report, 0, hint, shutdownBudget, log, finish)
			case CmdUpgrade, CmdRollback, CmdReopenLog:
				ops.Add(1)
				go func() {
					defer ops.Done()
					h.control(opCtx, sup, c, opTimeout, log)
				}()
			default:
				log.Warn("unknown control code ignored (128 upgrade, 129 rollback, 130 reopen the log file)", "code", uint32(c))
			}
		}
	}
}

// stop drains under STOP_PENDING.
func (h *Handler) stop(sup Supervisor, c Cmd, done <-chan error, tick *time.Ticker, report func(Status),
	cp uint32, hint, shutdownBudget time.Duration, log *slog.Logger, finish func(error, bool) (bool, uint32)) (bool, uint32) {
	why := "stop"
	var budget <-chan time.Time
	if c == CmdShutdown {
		why = "system shutdown"
		t := time.NewTimer(shutdownBudget)
		defer t.Stop()
		budget = t.C
	}
	log.Info("service stopping: draining every generation", "asked", why)
	st := Status{State: StopPending, CheckPoint: cp + 1, WaitHint: hint}
	report(st)
	sup.Stop()
	for {
		select {
		case err := <-done:
			return finish(err, true)
		case <-tick.C:
			st.CheckPoint++
			report(st)
		case <-budget:
			log.Error("system shutdown: no time left to drain; the generations end with the service", "budget", shutdownBudget)
			report(Status{State: Stopped})
			return true, ExitDrainCut
		}
	}
}

// control runs a custom control code and logs its outcome.
func (h *Handler) control(ctx context.Context, sup Supervisor, c Cmd, timeout time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		what string
		res  contract.UpgradeResult
		err  error
	)
	switch c {
	case CmdUpgrade:
		what = "upgrade"
		res, err = sup.Upgrade(ctx)
	case CmdRollback:
		what = "rollback"
		res, err = sup.Rollback(ctx)
	case CmdReopenLog:
		if err := sup.ReopenLog(); err != nil {
			log.Error("control code 130: reopening the log file failed", "err", err)
			return
		}
		log.Info("control code 130: log file reopened")
		return
	}
	if err != nil {
		log.Error(fmt.Sprintf("control code %d: %s failed; the serving generation keeps serving", uint32(c), what),
			"code", contract.CodeOf(err), "err", err)
		return
	}
	log.Info(fmt.Sprintf("control code %d: %s done", uint32(c), what),
		"pid", res.PID, "ready_after", res.ReadyAfter.Round(time.Millisecond))
}
