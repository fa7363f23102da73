// Package events is baton's record of what happened to a service: one
// structured record per lifecycle step (an upgrade started, a generation
// started, got ready, took over, drained, failed, was rolled back...),
// appended as a JSON line (log/slog's JSON handler) to a bounded file
// beside the service's control endpoint, and read back by `baton events`,
// `baton report` and anyone else: the attribute names follow
// OpenTelemetry's conventions where one exists (event.name, service.name,
// deployment.id, process.pid, error.type).
//
// Every generation of a library service appends to the same file, and so
// does the `baton run` supervisor: the file outlives the processes. It is
// rotated at MaxBytes into one older file (NAME.jsonl.1).
package events

import (
	"path/filepath"
	"time"
)

// Record is one lifecycle step. The JSON names are the file's.
type Record struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level,omitempty"`
	Message string    `json:"msg,omitempty"`

	// Name is the step: "baton." and a lifecycle notice kind, e.g.
	// baton.upgrade_started, baton.generation_ready, baton.switched,
	// baton.drained, baton.rolled_back (see the Name constants).
	Name    string `json:"event.name"`
	Service string `json:"service.name"`
	// Deployment is one operation (an upgrade, rollback, restart, start
	// or stop): every step of it carries the same id, the drain of the
	// generation it replaced included.
	Deployment string `json:"deployment.id,omitempty"`
	Operation  string `json:"baton.operation,omitempty"`
	// Source is who wrote the record: "supervisor" (baton run) or
	// "library" (the generation itself).
	Source     string  `json:"baton.source,omitempty"`
	PID        int     `json:"process.pid,omitempty"`
	Generation int     `json:"baton.generation,omitempty"`
	State      string  `json:"baton.generation.state,omitempty"`
	Reason     string  `json:"baton.generation.reason,omitempty"` // why the generation was started
	Binary     string  `json:"process.executable.path,omitempty"`
	Duration   float64 `json:"baton.duration_s,omitempty"` // of the step this record ends
	ErrorType  string  `json:"error.type,omitempty"`       // a baton error code
	Error      string  `json:"error.message,omitempty"`
}

// Took is Duration as a time.Duration.
func (r Record) Took() time.Duration { return time.Duration(r.Duration * float64(time.Second)) }

// Event names (Record.Name).
const (
	UpgradeStarted  = "baton.upgrade_started"
	Started         = "baton.generation_started"
	Ready           = "baton.generation_ready"
	StartFailed     = "baton.generation_failed"
	Switched        = "baton.switched"
	Serving         = "baton.serving"
	UpgradeFailed   = "baton.upgrade_failed"
	ProbationPassed = "baton.probation_passed"
	ProbationFailed = "baton.probation_failed"
	RolledBack      = "baton.rolled_back"
	Crashed         = "baton.crashed"
	GaveUp          = "baton.gave_up"
	FallingBack     = "baton.falling_back"
	Drained         = "baton.drained"
	Killed          = "baton.killed_at_drain_deadline"
	Stopping        = "baton.stopping"
	// ControlRequest: a control operation arrived (baton run
	// --http-control logs every call).
	ControlRequest = "baton.control_request"
)

// DefaultMaxBytes bounds the file (rotated into one older file).
const DefaultMaxBytes = 1 << 20

// Path is where the events of the service called name are kept, in the
// runtime directory dir (the directory of its control endpoint).
func Path(dir, name string) string { return filepath.Join(dir, "events", name+".jsonl") }
