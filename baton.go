// Package baton upgrades a running network service to a new binary without
// dropping a connection or a request.
//
// The running generation owns the listening sockets. When an upgrade is
// asked for (Upgrader.Upgrade, the `baton upgrade` command, or SIGHUP on
// Unix), it starts the binary that is on disk now and hands it its sockets
// (the "baton"). The new generation serves as soon as it can and calls
// Ready; only then does the old generation stop accepting and drain. If the
// new generation exits, refuses the handoff or is not ready in time, it is
// killed and the old generation keeps serving as if nothing happened; the
// caller gets a typed error saying what went wrong.
//
// A service asks its Upgrader for listeners instead of calling net.Listen:
//
//	upg, err := baton.New(baton.Options{Name: "hello"})
//	if err != nil { ... }
//	defer upg.Stop()
//	ln, err := upg.Listen("tcp", "127.0.0.1:8080")
//	srv := httpdrain.New(&http.Server{Handler: h}, httpdrain.Options{})
//	go srv.Serve(ln)
//	if err := upg.Ready(); err != nil { ... }
//	<-upg.Exit()                  // handed over (or stopped): drain
//	ctx, cancel := upg.DrainContext()
//	defer cancel()
//	srv.Drain(ctx)
//
// The same program runs unchanged when started by systemd (socket
// activation, sd_notify) or by the baton supervisor.
package baton

import (
	"log/slog"
	"os"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/handoff"
)

// Errors returned by Upgrade (and carried in the control protocol's codes:
// they are internal/contract's sentinels). Test them with errors.Is.
var (
	// ErrUpgradeInProgress: another upgrade of this generation is running.
	ErrUpgradeInProgress = contract.ErrBusy
	// ErrTooManyDraining: the bound on old generations still draining is reached.
	ErrTooManyDraining = contract.ErrTooManyDraining
	// ErrNotReady: this generation has not called Ready yet.
	ErrNotReady = contract.ErrNotReady
	// ErrStopped: this generation has handed over or is stopping.
	ErrStopped = contract.ErrStopped

	// ErrChildExited: the new generation exited before it was ready. The
	// error is a *ChildExitError with the exit code and the tail of stderr.
	ErrChildExited = contract.ErrChildExited
	// ErrReadyTimeout: the new generation did not call Ready in time; it was killed.
	ErrReadyTimeout = contract.ErrReadyTimeout
	// ErrProtocolVersion: the new binary speaks another handoff protocol version.
	ErrProtocolVersion = contract.ErrVersion
	// ErrRefused: the new generation refused the handoff for another reason.
	ErrRefused = contract.ErrRefused
	// ErrBinary: the binary on disk is missing or cannot be executed.
	ErrBinary = contract.ErrBinary
	// ErrStateTooLarge: the state blob exceeds the configured bound.
	ErrStateTooLarge = contract.ErrStateTooLarge
	// ErrStateCorrupt: the state blob did not arrive intact.
	ErrStateCorrupt = contract.ErrStateCorrupt
	// ErrAborted: returned by Ready in a new generation whose parent called
	// the upgrade off (it timed out); the process should exit.
	ErrAborted = contract.ErrAborted
	// ErrCanceled: the upgrade's context was canceled (or this generation
	// was stopped) before the new generation was ready; it was killed.
	ErrCanceled = contract.ErrCanceled
	// ErrSupervised: this generation runs under `baton run`, which performs
	// upgrades itself (baton upgrade --name NAME reaches the supervisor).
	ErrSupervised = contract.ErrSupervised
	// ErrRolledBack: the generation an upgrade handed over to died during
	// its probation, and the one before it started its own binary again
	// (Status reports it as the last upgrade's outcome).
	ErrRolledBack = contract.ErrRolledBack
	// ErrUnsupported: the operation is not available on this platform yet.
	ErrUnsupported = contract.ErrUnsupported
)

// Counters count what happened to a service across its generations
// (Status.Counters).
type Counters = contract.Counters

// ChildExitError describes a new generation that exited before Ready.
type ChildExitError = contract.ExitError

// Options configure an Upgrader. The zero value is usable.
type Options struct {
	// Name of the control endpoint (`baton upgrade --name NAME`). Empty
	// means no control endpoint; upgrades then come from the signal or from
	// Upgrade.
	Name string
	// ReadyTimeout bounds how long a new generation may take to call Ready
	// (default 30s). It is killed when it does not make it.
	ReadyTimeout time.Duration
	// DrainTimeout is the drain deadline handed out by DrainContext
	// (default 30s).
	DrainTimeout time.Duration
	// IdleGrace is how long, after a handover, idle keep-alive connections
	// are left open so that their clients learn to reconnect without a
	// race. Zero means the default, 2s; a negative value means no grace
	// (idle connections are closed as soon as the drain starts). Pass
	// Upgrader.IdleGrace to httpdrain.Options.IdleGrace as it is: httpdrain
	// reads zero and negative values the same way.
	IdleGrace time.Duration
	// ForceExitAfter: a generation that has handed over and is still alive
	// this long after the handover exits with status 3, so that no old
	// generation outlives its drain (default DrainTimeout + 10s; negative
	// disables).
	ForceExitAfter time.Duration
	// Probation: after a handover, this generation keeps its sockets
	// (not accepting) until the new generation has lived this long, or
	// has itself handed over or been stopped. If the new generation dies
	// in that time (a crash, a kill), this generation starts its own
	// binary again on those sockets, puts the previous release back when
	// the upgrade came from UpgradeTo, and the rescued service reports the
	// upgrade as rolled back (Status). Connections arriving meanwhile wait
	// in the listen queue: the port never goes dark. Zero means the
	// default, 3s; negative disables it (the generation exits as soon as
	// its app has drained). Under a service manager that tracks the main
	// pid (systemd), its restart policy sees the death first.
	Probation time.Duration
	// PIDFile, when set, is written atomically with this generation's pid on
	// Ready and removed when the last generation stops.
	PIDFile string
	// Logger receives baton's own log lines (default slog.Default()).
	Logger *slog.Logger
	// UpgradeSignal triggers an upgrade (default SIGHUP on Unix; there are no
	// signals on Windows). Set NoSignal to disable.
	UpgradeSignal os.Signal
	// MaxDraining bounds how many old generations may still be draining when
	// a new upgrade starts (default 8).
	MaxDraining int
	// StateFunc, when set, produces a state blob for the next generation,
	// which reads it with State.
	StateFunc func() ([]byte, error)
	// MaxStateSize bounds the state blob in both directions (default 16 MiB).
	MaxStateSize int64
	// Binary is the program started by Upgrade (default: the running
	// executable's path, re-read from disk at every upgrade).
	Binary string
	// Args are the arguments of the new generation (default os.Args[1:]).
	Args []string
}

// NoSignal disables the upgrade signal when used as Options.UpgradeSignal.
var NoSignal os.Signal = noSignal{}

type noSignal struct{}

func (noSignal) String() string { return "none" }
func (noSignal) Signal()        {}

func (o *Options) setDefaults() {
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 30 * time.Second
	}
	if o.IdleGrace == 0 { // negative (no grace) is kept for httpdrain
		o.IdleGrace = 2 * time.Second
	}
	if o.Probation == 0 {
		o.Probation = 3 * time.Second
	}
	if o.ForceExitAfter == 0 {
		o.ForceExitAfter = o.DrainTimeout + 10*time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.UpgradeSignal == nil {
		o.UpgradeSignal = defaultUpgradeSignal
	}
	if o.MaxDraining <= 0 {
		o.MaxDraining = 8
	}
	if o.MaxStateSize <= 0 {
		o.MaxStateSize = 16 << 20
	}
	if o.MaxStateSize > handoff.MaxStateLimit {
		o.MaxStateSize = handoff.MaxStateLimit
	}
	if o.Args == nil {
		o.Args = os.Args[1:]
	}
}

// UpgradeResult describes a successful upgrade.
type UpgradeResult struct {
	PID        int    `json:"pid"`        // the new generation
	Generation int    `json:"generation"` // its number
	Binary     string `json:"binary"`
	// ReadyAfter: from starting the process to its ready message.
	ReadyAfter time.Duration `json:"ready_after_ns"`
	// AppStartup: the part of ReadyAfter the new generation spent between
	// its start (as seen by baton) and calling Ready; the rest is baton's
	// own overhead (exec, handoff).
	AppStartup time.Duration `json:"app_startup_ns"`
	// Took: from the upgrade request to the handover.
	Took time.Duration `json:"took_ns"`
	// Draining: older generations still draining after this handover,
	// including this one.
	Draining int `json:"draining"`
}
