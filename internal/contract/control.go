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
	// Proxy mode (baton run --proxy) only: the canary under way takes all
	// traffic and the upgrade completes (promote), or gets the share
	// Request.Weight (weight).
	OpPromote = "promote"
	OpWeight  = "weight"
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
	// Canary (upgrade, proxy mode): how the new generation takes traffic;
	// nil: all of it once ready (blue/green).
	Canary *CanaryPlan `json:"canary,omitempty"`
	// Weight (weight): the canary's share of new traffic, percent.
	Weight *int `json:"weight,omitempty"`
}

// CanaryPlan is a canary release in proxy mode: the new generation starts
// at weight 0, is checked, then takes Steps[0] percent of new requests (or
// connections), and Steps[i+1] after each StepInterval in which it did no
// worse than the stable generation by MaxErrorRatio and MaxP99Ratio. A
// plan with one step below 100 waits there for promote, weight or
// rollback; a plan that ends at 100 completes the upgrade by itself.
type CanaryPlan struct {
	Steps         []int         `json:"steps"`
	StepInterval  time.Duration `json:"step_interval_ns,omitempty"`
	MaxErrorRatio float64       `json:"max_error_ratio,omitempty"` // 0: the default
	MaxP99Ratio   float64       `json:"max_p99_ratio,omitempty"`   // 0: the default
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
	// Canary (proxy mode): the canary's share when the upgrade answered
	// before it took all traffic (waiting for promote); nil otherwise.
	Canary *CanaryState `json:"canary,omitempty"`
}

// CanaryState says where a canary release stands.
type CanaryState struct {
	Generation int   `json:"generation"`
	PID        int   `json:"pid"`
	Weight     int   `json:"weight"` // percent of new traffic
	Step       int   `json:"step"`   // index in the plan's steps
	Steps      []int `json:"steps"`
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
	// generation passed to this one at its handover (library mode; under
	// baton run, those the supervisor relayed to the serving generation).
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
	// Proxy: baton run --proxy only.
	Proxy *ProxyInfo `json:"proxy,omitempty"`
}

// ProxyInfo is what baton's own proxy sends where (baton run --proxy).
type ProxyInfo struct {
	Mode     string         `json:"mode"` // http or tcp
	Backends []ProxyBackend `json:"backends"`
	Canary   *CanaryState   `json:"canary,omitempty"`
	// Unrouted counts requests or connections that found no backend.
	Unrouted int64 `json:"unrouted"`
}

// ProxyBackend is one generation as the proxy sees it. The rates and
// ratios cover the proxy's sliding window (WindowSeconds).
type ProxyBackend struct {
	Generation    int           `json:"generation"`
	PID           int           `json:"pid"`
	Addr          string        `json:"addr"`
	Weight        int           `json:"weight"` // percent of new traffic
	InFlight      int64         `json:"in_flight"`
	Requests      int64         `json:"requests"` // since it joined
	RatePerSecond float64       `json:"rate_per_second"`
	ErrorRatio    float64       `json:"error_ratio"` // 5xx and connection errors
	P99           time.Duration `json:"p99_ns"`
	WindowSeconds float64       `json:"window_seconds"`
	// Passed counts, of Requests, the client connections whose socket
	// the tcp proxy passed to the generation's process (no bytes
	// relayed); Refused the passes it refused (offered elsewhere).
	Passed  int64 `json:"passed,omitempty"`
	Refused int64 `json:"refused,omitempty"`
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
	// ConnsTaken counts the idle client connections the supervisor
	// relayed to it from draining generations (issue 11), ConnsPassed
	// those it relayed from it to the serving one at its own drain.
	ConnsTaken  int64 `json:"conns_taken,omitempty"`
	ConnsPassed int64 `json:"conns_passed,omitempty"`
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
