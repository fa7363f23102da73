package contract

import "fmt"

// ExitError reports a new generation that exited before it was ready. It
// matches ErrChildExited with errors.Is. It is also the wire document of
// a child_exited failure (Response.Result), so its JSON names are part of
// the protocol.
type ExitError struct {
	PID        int    `json:"pid"`
	ExitCode   int    `json:"exit_code"`        // -1 when killed by a signal
	Signal     string `json:"signal,omitempty"` // the signal that killed it, if any
	StderrTail string `json:"stderr_tail,omitempty"`
}

func (e *ExitError) Error() string {
	// Signal is the signal's own name ("killed", "terminated"): Brief
	// words it ("killed by signal: killed", never "killed by killed").
	msg := fmt.Sprintf("new generation (pid %d) exited before it was ready: %s", e.PID, e.Brief())
	if e.StderrTail != "" {
		msg += "; last stderr:\n" + e.StderrTail
	}
	return msg
}

// Brief says how the process ended, in a few words (for a process that
// was serving: "exit code 2", "killed by signal: killed").
func (e *ExitError) Brief() string {
	if e.Signal != "" {
		return "killed by signal: " + e.Signal
	}
	return fmt.Sprintf("exit code %d", e.ExitCode)
}

// Is makes errors.Is(err, ErrChildExited) true.
func (e *ExitError) Is(target error) bool { return target == ErrChildExited }
