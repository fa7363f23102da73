package supervisor

import (
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/lifecycle"
)

// PhaseRestarting: the current generation died and a new one is starting
// (the sockets stay open; clients wait in the accept queue).
const PhaseRestarting = string(lifecycle.PhaseRestarting)

// Status is what `baton status` reports for a supervised service: the
// fields every baton service reports (pid and generation of the serving
// generation, phase, listeners, draining pids, last upgrade) plus the
// supervisor's own (Supervisor). It is the control protocol's document.
type Status = contract.Status

// Info describes the supervisor.
type Info = contract.SupervisorInfo

// GenInfo describes one live generation.
type GenInfo = contract.GenInfo

// LogsResult answers `baton logs`.
type LogsResult = contract.LogsResult
