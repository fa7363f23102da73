// Package ctl is baton's local control endpoint: how the `baton` CLI (or any
// script) asks a running generation to upgrade or to report its status.
//
// On Unix the endpoint is a unix socket (mode 0600 in a 0700 directory, peer
// uid checked); on Windows a named pipe with a restrictive DACL. The wire
// protocol is the same on both: one JSON request line, one JSON response
// line, then the connection is closed. Every message carries the protocol
// version so that an old CLI and a new service (or the reverse) fail with a
// clear message instead of misreading each other.
package ctl

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"

	"github.com/baton-go/baton/internal/contract"
)

// Version is the control protocol version spoken by this build.
const Version = contract.ControlVersion

// maxLine bounds one request or response line, so a confused or hostile peer
// cannot make the service buffer without limit.
const maxLine = 1 << 20

// Operations understood by a service (defined in internal/contract).
const (
	OpUpgrade  = contract.OpUpgrade
	OpStatus   = contract.OpStatus
	OpStop     = contract.OpStop
	OpRollback = contract.OpRollback
	OpLogs     = contract.OpLogs
)

// Error codes carried in Response.Code: contract's, named here for the
// transport's users. contract.CodeOf maps errors to them, contract.ExitCode
// maps them to the CLI's exit codes.
const (
	CodeBusy            = contract.CodeBusy
	CodeTooMany         = contract.CodeTooMany
	CodeChildExited     = contract.CodeChildExited
	CodeReadyTimeout    = contract.CodeReadyTimeout
	CodeProtocol        = contract.CodeProtocol
	CodeControlProtocol = contract.CodeControlProtocol
	CodeBinary          = contract.CodeBinary
	CodeState           = contract.CodeState
	CodeStopped         = contract.CodeStopped
	CodeBadRequest      = contract.CodeBadRequest
	CodeUnsupported     = contract.CodeUnsupported
	CodeForbidden       = contract.CodeForbidden
	CodeCanceled        = contract.CodeCanceled
	CodeRolledBack      = contract.CodeRolledBack
	CodeNoPrevious      = contract.CodeNoPrevious
	CodeInternal        = contract.CodeInternal
)

// Transport errors. Each carries its wire code (contract.CodeOf): what
// the CLI reports and exits with when it cannot talk to a service.
var (
	// ErrNoEndpoint means nothing listens under that name.
	ErrNoEndpoint = contract.NewError(contract.CodeUnreachable, "no baton service listens under that name")
	// ErrNameInUse means a live service already owns the endpoint name.
	ErrNameInUse = contract.NewError(contract.CodeBusy, "control endpoint name already in use by a running service")
	// ErrBadName means the name cannot be used as an endpoint name.
	ErrBadName = contract.NewError(contract.CodeUsage, "invalid control endpoint name")
	// ErrPeerRefused means the peer is not the owner of the service.
	ErrPeerRefused = contract.NewError(contract.CodeForbidden, "control peer refused")
	// ErrUnsafeDir means the runtime directory, or a name on the way to
	// it, could be changed by another user (a link they own, a directory
	// they may write to): a socket found there could be theirs.
	ErrUnsafeDir = contract.NewError(contract.CodeForbidden, "unsafe control directory")
	// ErrUncorroborated means what a service says about itself (the path
	// of its binary) is not confirmed by the system (see Corroborate).
	ErrUncorroborated = contract.NewError(contract.CodeForbidden, "not corroborated by the system")
	// ErrVersion means the peer speaks another protocol version.
	ErrVersion = contract.NewError(contract.CodeControlProtocol, "control protocol version mismatch")
	// ErrUnsupported means the control endpoint is not implemented on this platform.
	ErrUnsupported = contract.NewError(contract.CodeUnsupported, "control endpoint not supported on this platform yet")
)

// Request is what a client sends; Response, what a service answers
// (defined in internal/contract).
type (
	Request  = contract.Request
	Response = contract.Response
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckName reports whether name is a valid endpoint name: 1-64 characters
// of letters, digits, '.', '_' and '-', not starting with a punctuation mark
// (so a name can never climb out of the runtime directory).
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w %q: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", ErrBadName, name)
	}
	return nil
}

func writeLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// readLine reads one newline-terminated JSON document of at most maxLine bytes.
func readLine(r *bufio.Reader, v any) error {
	var line []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				break
			}
			return err
		}
		line = append(line, chunk...)
		if len(line) > maxLine {
			return fmt.Errorf("control message longer than %d bytes", maxLine)
		}
		if !isPrefix {
			break
		}
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("malformed control message: %w", err)
	}
	return nil
}
