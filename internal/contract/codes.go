package contract

import (
	"errors"
	"syscall"
)

// Wire codes: the machine-readable half of every failure that crosses a
// process boundary (Response.Code, Outcome.Code, the CLI's --json "code").
// The strings are part of the protocol: never change one, only add.
const (
	// Failures of an upgrade or a rollback, reported by the service; the
	// generation that served keeps serving.
	CodeChildExited  = "child_exited"  // the new generation exited before it was ready
	CodeReadyTimeout = "ready_timeout" // the new generation never became ready
	CodeProtocol     = "protocol"      // the new generation refused the handoff, or the supervisor link failed
	CodeBinary       = "binary"        // binary missing or not executable
	CodeState        = "state"         // state blob too large, corrupt, or not made
	CodeCanceled     = "canceled"      // the upgrade was canceled or called off
	CodeRolledBack   = "rolled_back"   // the new generation failed its probation; the previous binary serves again
	CodeNoPrevious   = "no_previous"   // rollback without a previous generation
	CodeGaveUp       = "gave_up"       // the supervisor gave up on an app that keeps failing
	// CodeCanaryFailed (proxy mode): the canary did worse than the stable
	// generation in a step of its rollout; it was put back to weight 0 and
	// the stable generation takes all new traffic again.
	CodeCanaryFailed = "canary_failed"

	// Busy: retry later.
	CodeBusy    = "busy"              // another upgrade is running (or, for a binary, the file or the releases lock is busy)
	CodeTooMany = "too_many_draining" // too many old generations still drain
	CodeStopped = "stopped"           // the generation reached is starting, draining or stopping

	// The request does not apply.
	CodeUnsupported = "unsupported" // not available on this platform or for this kind of service
	CodeSupervised  = "supervised"  // run by baton run: ask the supervisor
	CodeNoCanary    = "no_canary"   // promote or weight (proxy mode) without a canary under way

	// The control exchange itself.
	CodeBadRequest      = "bad_request"      // malformed request or unknown operation
	CodeForbidden       = "forbidden"        // the peer may not steer this service
	CodeControlProtocol = "control_protocol" // the client and the service speak other control protocol versions
	CodeInternal        = "internal"         // anything else

	// Codes the CLI gives to what happened on its side (never sent by a
	// service).
	CodeUsage       = "usage"       // bad flags or arguments
	CodeUnreachable = "unreachable" // nothing answers under that name, or no permission
	CodeTimeout     = "timeout"     // no answer in time; the service may still finish
	CodeFailed      = "failed"      // the command failed for a reason without a code of its own

	// CodeResources: a process (the service, a new generation or the
	// CLI) ran out of file descriptors (EMFILE, ENFILE). The operation
	// failed and the serving generation keeps serving (ExitFailed): raise
	// the limit (ulimit -n, LimitNOFILE=) or close descriptors, then retry.
	CodeResources = "resources"
)

// Refusal codes of a binary (internal/release): a refused binary changes
// nothing. A file still being written, or another baton holding the
// releases lock, is CodeBusy.
const (
	CodeNotExecutable = "not_executable"
	CodeModule        = "module"
	CodeChecksum      = "checksum"
	CodeSignature     = "signature"
	CodeSmoke         = "smoke"
	CodeUnsafeDir     = "unsafe_dir"
	CodeDiskSpace     = "disk_space"
)

// Refusal codes on the handoff channel (Reply.Code): why a new generation
// refused the handoff message.
const (
	RefuseProtocol      = "protocol"        // another handoff version, or files it cannot rebuild
	RefuseStateTooLarge = "state_too_large" // the state blob exceeds its bound
	RefuseStateCorrupt  = "state"           // the state blob did not arrive intact
)

// Exit codes of the baton CLI, for scripts. ExitCode maps a wire code to one.
const (
	ExitOK          = 0 // success
	ExitFailed      = 1 // the operation failed; the running generation keeps serving
	ExitUsage       = 2 // usage error, or the operation does not apply to this service
	ExitUnreachable = 3 // the service cannot be reached (not running, wrong name, permission)
	ExitBusy        = 4 // busy: retry later
	ExitInternal    = 5 // protocol or internal error
)

// sentinelCodes is the one mapping from errors to codes, in the order it
// is tried: an error that wraps several sentinels gets the first one's
// code (a rolled-back upgrade says rolled_back, whatever made the probation
// fail). The first sentinel of each code is what ErrorFor returns.
var sentinelCodes = []struct {
	err  error
	code string
}{
	// Before ErrRolledBack: a canary rolled back for its figures says so.
	{ErrCanaryFailed, CodeCanaryFailed},
	{ErrRolledBack, CodeRolledBack},
	{ErrNoPrevious, CodeNoPrevious},
	{ErrNoCanary, CodeNoCanary},
	{ErrBusy, CodeBusy},
	{ErrTooManyDraining, CodeTooMany},
	{ErrStopped, CodeStopped},
	{ErrNotReady, CodeStopped},
	{ErrSupervised, CodeSupervised},
	{ErrChildExited, CodeChildExited},
	{ErrReadyTimeout, CodeReadyTimeout},
	{ErrVersion, CodeProtocol},
	{ErrRefused, CodeProtocol},
	{ErrStateTooLarge, CodeState},
	{ErrStateCorrupt, CodeState},
	{ErrNoState, CodeState},
	{ErrBinary, CodeBinary},
	{ErrUnsupported, CodeUnsupported},
	{ErrCanceled, CodeCanceled},
	{ErrAborted, CodeCanceled},
	{ErrParentGone, CodeCanceled},
	{ErrLink, CodeProtocol},
	{ErrGaveUp, CodeGaveUp},
}

// Coder is an error that carries its own wire code: the sentinels of
// packages that this one cannot import (internal/release's refusals) are
// made with NewError, and CodeOf finds their code with errors.As.
type Coder interface {
	error
	Code() string
}

// NewError returns a sentinel error with the message msg and the wire code
// code (CodeOf returns code for it and for every error wrapping it).
func NewError(code, msg string) error { return &codedError{code: code, msg: msg} }

type codedError struct{ code, msg string }

func (e *codedError) Error() string { return e.msg }
func (e *codedError) Code() string  { return e.code }

// CodeOf is the one mapping from an error to its wire code: "" for nil,
// the code of the first sentinel (in the order above) that err wraps, else
// the code of the first Coder in its chain, else CodeInternal.
func CodeOf(err error) string {
	if err == nil {
		return ""
	}
	if OutOfDescriptors(err) {
		return CodeResources
	}
	for _, s := range sentinelCodes {
		if errors.Is(err, s.err) {
			return s.code
		}
	}
	var c Coder
	if errors.As(err, &c) {
		return c.Code()
	}
	return CodeInternal
}

// ErrorFor turns a wire code back into an error: the sentinel of that code
// when there is one (ErrBusy for "busy"), else an error that carries the
// code (so that CodeOf(ErrorFor(c)) == c for every non-empty c). It
// returns nil for "".
func ErrorFor(code string) error {
	if code == "" {
		return nil
	}
	for _, s := range sentinelCodes {
		if s.code == code {
			return s.err
		}
	}
	return NewError(code, code)
}

// ExitCode is the one mapping from a wire code to the CLI's exit code.
// A code this build does not know (from a newer service) is a failure that
// the service reported cleanly: ExitFailed.
func ExitCode(code string) int {
	switch code {
	case "":
		return ExitOK
	case CodeUsage, CodeUnsupported, CodeSupervised, CodeNoCanary:
		return ExitUsage
	case CodeUnreachable, CodeForbidden:
		return ExitUnreachable
	case CodeBusy, CodeTooMany, CodeStopped:
		return ExitBusy
	case CodeBadRequest, CodeControlProtocol, CodeInternal:
		return ExitInternal
	}
	return ExitFailed
}

// RefusalCode is the handoff refusal code (Reply.Code) for an error met
// while reading the handoff message.
func RefusalCode(err error) string {
	switch {
	case errors.Is(err, ErrStateTooLarge):
		return RefuseStateTooLarge
	case errors.Is(err, ErrStateCorrupt):
		return RefuseStateCorrupt
	}
	return RefuseProtocol
}

// RefusalError is the sentinel a parent reports for a child's refusal code:
// ErrVersion, ErrStateTooLarge, ErrStateCorrupt, or ErrRefused for any
// other reason.
func RefusalError(code string) error {
	switch code {
	case RefuseProtocol:
		return ErrVersion
	case RefuseStateTooLarge:
		return ErrStateTooLarge
	case RefuseStateCorrupt:
		return ErrStateCorrupt
	}
	return ErrRefused
}

// OutOfDescriptors reports whether err comes from a process that ran out
// of file descriptors (EMFILE: its own limit; ENFILE: the system's).
func OutOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}
