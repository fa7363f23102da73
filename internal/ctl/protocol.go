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
	"errors"
	"fmt"
	"io"
	"regexp"
)

// Version is the control protocol version spoken by this build.
const Version = 1

// maxLine bounds one request or response line, so a confused or hostile peer
// cannot make the service buffer without limit.
const maxLine = 1 << 20

// Operations understood by a generation.
const (
	OpUpgrade  = "upgrade"
	OpStatus   = "status"
	OpStop     = "stop"
	OpRollback = "rollback"
	OpLogs     = "logs"
)

// Error codes carried in Response.Code. The CLI maps them to exit codes.
const (
	CodeBusy         = "busy" // another upgrade is running
	CodeTooMany      = "too_many_draining"
	CodeChildExited  = "child_exited"  // new generation exited before ready
	CodeReadyTimeout = "ready_timeout" // new generation never became ready
	CodeProtocol     = "protocol"      // handoff or control protocol mismatch
	CodeBinary       = "binary"        // binary missing or not executable
	CodeState        = "state"         // state blob too large or corrupt
	CodeStopped      = "stopped"       // this generation is draining or stopping
	CodeBadRequest   = "bad_request"   // malformed request
	CodeUnsupported  = "unsupported"   // not available on this platform
	CodeForbidden    = "forbidden"     // the peer may not steer this service
	CodeCanceled     = "canceled"      // the upgrade was canceled
	CodeRolledBack   = "rolled_back"   // the new generation failed its probation; the previous binary serves again
	CodeInternal     = "internal"
)

var (
	// ErrNoEndpoint means nothing listens under that name.
	ErrNoEndpoint = errors.New("no baton service listens under that name")
	// ErrNameInUse means a live service already owns the endpoint name.
	ErrNameInUse = errors.New("control endpoint name already in use by a running service")
	// ErrBadName means the name cannot be used as an endpoint name.
	ErrBadName = errors.New("invalid control endpoint name")
	// ErrPeerRefused means the peer is not the owner of the service.
	ErrPeerRefused = errors.New("control peer refused")
	// ErrVersion means the peer speaks another protocol version.
	ErrVersion = errors.New("control protocol version mismatch")
	// ErrUnsupported means the control endpoint is not implemented on this platform.
	ErrUnsupported = errors.New("control endpoint not supported on this platform yet")
)

// Request is what a client sends.
type Request struct {
	Version int    `json:"baton"`
	Op      string `json:"op"`
	// Binary (upgrade): install this file at the service's binary path
	// first; the previous one is put back if the upgrade fails.
	Binary string `json:"binary,omitempty"`
	// Since (logs): the first line wanted; negative: the last -Since lines.
	Since int64 `json:"since,omitempty"`
}

// Response is what a generation answers. Result holds an operation-specific
// JSON document (see the baton package for its shape).
type Response struct {
	Version int             `json:"baton"`
	OK      bool            `json:"ok"`
	Code    string          `json:"code,omitempty"`
	Error   string          `json:"error,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
}

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
