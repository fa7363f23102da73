package contract

import (
	"encoding/json"
	"errors"
	"time"
)

// The control protocol: how the baton CLI (or any script) asks a service
// (a library generation or the supervisor) to upgrade, roll back, stop, or
// report its status or logs. One JSON Request line, one JSON Response line;
// internal/ctl carries them (unix socket, named pipe). Every JSON name below
// is part of the protocol: an older CLI must keep reading a newer service's
// answers, so names are never changed, only added.

// ControlVersion is the control protocol version spoken by this build.
const ControlVersion = 1

// Operations of the control protocol.
const (
	OpUpgrade  = "upgrade"
	OpStatus   = "status"
	OpStop     = "stop"
	OpRollback = "rollback"
	OpLogs     = "logs"
)

// Request is what a client sends.
type Request struct {
	Version int    `json:"baton"`
	Op      string `json:"op"`
	// Binary (upgrade): install this file at the service's binary path
	// first; the previous one is put back if the upgrade fails.
	Binary string `json:"binary,omitempty"`
	// ExpectSHA256 (upgrade, baton run): the binary the service starts
	// must be this one, the release the caller installed; if another
	// deploy switched the installed file meanwhile, the upgrade is refused
	// as busy instead of starting somebody else's binary.
	ExpectSHA256 string `json:"expect_sha256,omitempty"`
	// Since (logs): the first line wanted; negative: the last -Since lines.
	Since int64 `json:"since,omitempty"`
}

// Response is what a service answers. Result holds the operation's
// document: Status (status, stop), UpgradeResult (upgrade, rollback),
// LogsResult (logs); on a child_exited failure, the ExitError.
type Response struct {
	Version int             `json:"baton"`
	OK      bool            `json:"ok"`
	Code    string          `json:"code,omitempty"`
	Error   string          `json:"error,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
}

// Decode decodes a response's result into v.
func (r Response) Decode(v any) error {
	if len(r.Result) == 0 {
		return errors.New("control response has no result")
	}
	return json.Unmarshal(r.Result, v)
}

// OKResponse builds a successful response carrying v as its result.
func OKResponse(v any) Response {
	b, err := json.Marshal(v)
	if err != nil {
		return Response{Code: CodeInternal, Error: err.Error()}
	}
	return Response{OK: true, Result: b}
}

// ErrorResponse builds the response for err: its code (CodeOf) and message
// and, when a new generation exited before it was ready, the ExitError
// (exit code, end of stderr) as the result.
func ErrorResponse(err error) Response {
	r := Response{Code: CodeOf(err), Error: err.Error()}
	var ee *ExitError
	if errors.As(err, &ee) {
		r.Result = OKResponse(ee).Result
	}
	return r
}

// UpgradeResponse builds the response to an upgrade or a rollback.
func UpgradeResponse(res UpgradeResult, err error) Response {
	if err != nil {
		return ErrorResponse(err)
	}
	return OKResponse(res)
}

// UpgradeResult describes a successful upgrade (or rollback).
type UpgradeResult struct {
	PID        int           `json:"pid"`        // the new generation
	Generation int           `json:"generation"` // its number
	Binary     string        `json:"binary"`
	ReadyAfter time.Duration `json:"ready_after_ns"` // from starting the process to its ready message
	AppStartup time.Duration `json:"app_startup_ns"` // the part of ReadyAfter the app spent before Ready
	Took       time.Duration `json:"took_ns"`        // from the request to the handover
	Draining   int           `json:"draining"`       // older generations still draining after it
}

// Outcome records the last upgrade attempt (Status.Last).
type Outcome struct {
	At     time.Time      `json:"at"`
	OK     bool           `json:"ok"`
	Result *UpgradeResult `json:"result,omitempty"`
	Code   string         `json:"code,omitempty"`
	Error  string         `json:"error,omitempty"`
}

// Status is the answer to status (and stop): the serving generation, as
// every baton service reports it, plus the supervisor's own part under
// baton run.
type Status struct {
	Name        string        `json:"name"`
	PID         int           `json:"pid"`
	Generation  int           `json:"generation"`
	Phase       string        `json:"phase"`
	Binary      string        `json:"binary"`
	StartedAt   time.Time     `json:"started_at"`
	ReadyAt     *time.Time    `json:"ready_at,omitempty"`
	Uptime      time.Duration `json:"uptime_ns"`
	Listeners   []string      `json:"listeners"`
	OpenHandles int           `json:"open_handles"` // open fds (Unix) or handles (Windows); -1 unknown
	Draining    []int         `json:"draining_pids"`
	ParentPID   int           `json:"parent_pid,omitempty"`
	// ConnsTaken counts the idle client connections the previous
	// generation passed to this one at its handover (library mode).
	ConnsTaken int       `json:"conns_taken,omitempty"`
	Last       *Outcome  `json:"last_upgrade,omitempty"`
	Counters   *Counters `json:"counters,omitempty"`
	// Supervisor: under baton run only.
	Supervisor *SupervisorInfo `json:"supervisor,omitempty"`
}

// Counters count what happened to a service across its generations: a
// library service carries them from each generation to the next in the
// handoff; the supervisor keeps them for its own life.
type Counters struct {
	UpgradesSucceeded  int64 `json:"upgrades_succeeded"`
	UpgradesFailed     int64 `json:"upgrades_failed"`      // the serving generation stayed
	UpgradesRolledBack int64 `json:"upgrades_rolled_back"` // the new generation failed its probation
	Restarts           int64 `json:"restarts"`             // generations started after a crash
	DrainsForced       int64 `json:"drains_forced"`        // generations killed at the drain deadline
}

// SupervisorInfo describes the supervisor (baton run).
type SupervisorInfo struct {
	PID         int       `json:"pid"`
	Restarts    int       `json:"restarts"`
	Command     []string  `json:"command"`
	LogFile     string    `json:"log_file,omitempty"`
	Generations []GenInfo `json:"generations"`
}

// GenInfo describes one live generation of a supervised app.
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

// LogsResult answers logs (baton run).
type LogsResult struct {
	Lines []LogLine `json:"lines"`
	Next  int64     `json:"next"`
}

// LogLine is one line of a generation's output.
type LogLine struct {
	Seq  int64  `json:"seq"`
	Text string `json:"text"`
}
