package supervisor

import (
	"time"

	"github.com/baton-go/baton"
)

// PhaseRestarting: the current generation died and a new one is starting
// (the sockets stay open; clients wait in the accept queue).
const PhaseRestarting = "restarting"

// Status is what `baton status` reports for a supervised service: the
// fields every baton service reports (pid and generation of the serving
// generation, phase, listeners, draining pids, last upgrade) plus the
// supervisor's own.
type Status struct {
	baton.Status
	Supervisor *Info `json:"supervisor,omitempty"`
}

// Info describes the supervisor.
type Info struct {
	PID         int       `json:"pid"`
	Restarts    int       `json:"restarts"`
	Command     []string  `json:"command"`
	LogFile     string    `json:"log_file,omitempty"`
	Generations []GenInfo `json:"generations"`
}

// LogsResult answers `baton logs`.
type LogsResult struct {
	Lines []LogLine `json:"lines"`
	Next  int64     `json:"next"`
}

// GenInfo describes one live generation.
type GenInfo struct {
	Generation int           `json:"generation"`
	PID        int           `json:"pid"`
	Binary     string        `json:"binary"`
	SHA256     string        `json:"sha256"`
	StartedAt  time.Time     `json:"started_at"`
	ReadyAfter time.Duration `json:"ready_after_ns"`
	State      string        `json:"state"`
	// Conns counts the open connections it holds on the service's stream
	// sockets, where the platform tells (Linux); absent otherwise.
	Conns *int `json:"conns,omitempty"`
}
