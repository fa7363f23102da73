// Package handoff is what passes between two generations of a service during
// an upgrade: a versioned handoff message (names and addresses of the
// inherited sockets and files, the generation number, the still-draining
// ancestors and a checksummed state blob), the sockets themselves (file
// descriptors on Unix), the child's "ready" or its refusal, and the parent's
// go-ahead.
//
// The exchange on the handoff channel, each message one length-prefixed frame:
//
//	parent -> child   Handoff (JSON), then the state blob (raw bytes)
//	child  -> parent  Reply{Type: "ready"} or Reply{Type: "refused"}
//	parent -> child   Ack{Go: true} (handover done) or Ack{Go: false} (abort)
//	child  -> parent  Reply{Type: "handed_over"} or Reply{Type: "stopping"},
//	                  only when the ready reply said ReportsEnd and the Ack
//	                  asked Watch: the parent guards the child through a
//	                  probation and must tell a chosen end from a crash
//	parent -> child   ConnsMsg{Type: "conns"} and the connections' sockets
//	                  (Unix: one SCM_RIGHTS message), any number of times,
//	                  only when the ready reply said TakesConns and the Ack
//	                  said Conns: idle client connections the parent's
//	                  drain passes on (conns.go)
//	child  -> parent  Reply{Type: "conns_taken", Taken: n} for each
//
// How the channel and the sockets reach the child is platform code
// (spawn_unix.go, spawn_windows.go); everything here is shared.
package handoff

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/baton-go/baton/internal/contract"
)

// Version is the handoff protocol version. A child refuses a message with a
// version it does not speak, and says so, rather than guessing.
const Version = 1

// EnvChannel names the environment variable through which a child learns
// where its handoff channel is (a file descriptor number on Unix).
const EnvChannel = contract.EnvHandoff

const (
	maxFrame = 1 << 20 // bound for a JSON frame
	// MaxStateLimit is the largest state blob any generation accepts,
	// whatever it was configured with.
	MaxStateLimit = 1 << 30
)

// Sentinel errors: those of internal/contract, which the baton package
// re-exports.
var (
	ErrVersion       = contract.ErrVersion
	ErrStateTooLarge = contract.ErrStateTooLarge
	ErrStateCorrupt  = contract.ErrStateCorrupt
	ErrChildExited   = contract.ErrChildExited
	ErrReadyTimeout  = contract.ErrReadyTimeout
	ErrRefused       = contract.ErrRefused
	ErrAborted       = contract.ErrAborted
	ErrCanceled      = contract.ErrCanceled
	ErrParentGone    = contract.ErrParentGone
	ErrBinary        = contract.ErrBinary
	ErrUnsupported   = contract.ErrUnsupported
)

// Kind says what an inherited file is.
type Kind string

const (
	KindListener Kind = "listener" // stream listener: tcp, tcp4, tcp6, unix
	KindPacket   Kind = "packet"   // packet conn: udp*, unixgram
	KindFile     Kind = "file"     // any other named file
)

// FileDesc describes one inherited file. Listeners and packet conns are
// matched by Network+Addr (as the app asked for them), files by Name.
type FileDesc struct {
	Kind    Kind   `json:"kind"`
	Name    string `json:"name,omitempty"`
	Network string `json:"network,omitempty"`
	Addr    string `json:"addr,omitempty"`
	// Data is what the child needs to rebuild the file where no descriptor
	// can be inherited (Windows: WSAPROTOCOL_INFOW, or a handle value).
	Data []byte `json:"data,omitempty"`
}

// Proc identifies a process beyond its pid, so that a recycled pid is not
// mistaken for a still-draining generation.
type Proc struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start,omitempty"` // platform start stamp, 0 if unknown
}

// Handoff is the message a parent sends to its child.
type Handoff struct {
	Version    int        `json:"v"`
	Generation int        `json:"generation"`
	Parent     Proc       `json:"parent"`
	Binary     string     `json:"binary"`
	Files      []FileDesc `json:"files"`
	Draining   []Proc     `json:"draining,omitempty"`
	// StderrRelay (Windows): handles, valid in the child, of the read end
	// of its stderr pipe and of the parent's own stderr; see
	// spawn_windows.go.
	StderrRelay []uint64 `json:"stderr_relay,omitempty"`
	// RolledBack, when set, says why this generation was started: the
	// generation the parent had handed over to died during its probation,
	// and the parent started its own binary again (for Status).
	RolledBack string `json:"rolled_back,omitempty"`
	// Counters: what happened to the service so far, carried on.
	Counters *contract.Counters `json:"counters,omitempty"`
	// Conns (on a supervisor link): the supervisor carries client
	// connections between generations (linkconns.go).
	Conns       bool   `json:"conns,omitempty"`
	StateLen    int64  `json:"state_len"`
	StateSHA256 string `json:"state_sha256,omitempty"`
}

// Reply is the child's answer.
type Reply struct {
	Type       string        `json:"type"` // "ready" or "refused"
	PID        int           `json:"pid"`
	AppStartup time.Duration `json:"app_startup_ns,omitempty"`
	Code       string        `json:"code,omitempty"` // for refusals: "protocol", "state"
	Reason     string        `json:"reason,omitempty"`
	// ReportsEnd (in "ready"): this child can keep the channel after the
	// go-ahead and say how it ends (older children close it at once).
	ReportsEnd bool `json:"reports_end,omitempty"`
	// TakesConns (in "ready"): this child serves client connections the
	// parent passes after the go-ahead (conns.go).
	TakesConns bool `json:"takes_conns,omitempty"`
	// Taken (in "conns_taken"): how many of the connections of the last
	// ConnsMsg the child serves; it closed its copies of the others.
	Taken int `json:"taken,omitempty"`
}

// End reports sent by a watched child (Reply.Type) when it ends by choice.
const (
	EndHandedOver = "handed_over" // it handed over to its own successor
	EndStopping   = "stopping"    // it was told to stop
)

// Ack is the parent's last word: Go=true means the sockets are handed over.
type Ack struct {
	Go     bool   `json:"go"`
	Reason string `json:"reason,omitempty"`
	// Watch asks a child that ReportsEnd to keep the channel open and send
	// EndHandedOver or EndStopping before it ends by choice: the parent
	// guards it through a probation (an end without that report is a
	// crash).
	Watch bool `json:"watch,omitempty"`
	// Conns tells a child that TakesConns that the channel stays open and
	// connections may come on it (also without Watch).
	Conns bool `json:"conns,omitempty"`
}

func writeFrame(w io.Writer, b []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

func readFrame(r io.Reader, limit int64) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int64(binary.BigEndian.Uint32(hdr[:]))
	if n > limit {
		return nil, fmt.Errorf("handoff frame of %d bytes exceeds the limit of %d", n, limit)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("truncated handoff frame: %w", err)
	}
	return b, nil
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFrame(w, b)
}

func readJSON(r io.Reader, v any) error {
	b, err := readFrame(r, maxFrame)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("malformed handoff message: %w", err)
	}
	return nil
}

// WriteHandoff sends the message and the state blob.
func WriteHandoff(w io.Writer, h Handoff, state []byte) error {
	h.Version = Version
	h.StateLen = int64(len(state))
	h.StateSHA256 = ""
	if len(state) > 0 {
		sum := sha256.Sum256(state)
		h.StateSHA256 = hex.EncodeToString(sum[:])
	}
	if err := writeJSON(w, h); err != nil {
		return err
	}
	if len(state) > 0 {
		_, err := w.Write(state)
		return err
	}
	return nil
}

// ReadHandoff reads and checks a handoff message: the version first (so a
// newer parent gets a precise refusal), then the state blob against the
// limit and the checksum. The returned error wraps ErrVersion,
// ErrStateTooLarge or ErrStateCorrupt where it applies.
func ReadHandoff(r io.Reader, maxState int64) (Handoff, []byte, error) {
	var h Handoff
	raw, err := readFrame(r, maxFrame)
	if err != nil {
		return h, nil, fmt.Errorf("reading handoff message: %w", err)
	}
	var v struct {
		Version int `json:"v"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return h, nil, fmt.Errorf("malformed handoff message: %w", err)
	}
	if v.Version != Version {
		return h, nil, fmt.Errorf("%w: parent speaks version %d, this binary speaks %d", ErrVersion, v.Version, Version)
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return h, nil, fmt.Errorf("malformed handoff message: %w", err)
	}
	if maxState <= 0 || maxState > MaxStateLimit {
		maxState = MaxStateLimit
	}
	if h.StateLen < 0 || h.StateLen > maxState {
		return h, nil, fmt.Errorf("%w: %d bytes offered, this generation accepts at most %d", ErrStateTooLarge, h.StateLen, maxState)
	}
	if h.StateLen == 0 {
		return h, nil, nil
	}
	// Grown as the bytes arrive, not allocated at the announced size: a
	// short message must not make the reader allocate up to maxState.
	state, err := io.ReadAll(io.LimitReader(r, h.StateLen))
	if err == nil && int64(len(state)) < h.StateLen {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return h, nil, fmt.Errorf("%w: truncated after %d of %d bytes: %v", ErrStateCorrupt, len(state), h.StateLen, err)
	}
	sum := sha256.Sum256(state)
	if hex.EncodeToString(sum[:]) != h.StateSHA256 {
		return h, nil, fmt.Errorf("%w: sha256 mismatch", ErrStateCorrupt)
	}
	return h, state, nil
}

// ExitError reports a new generation that exited before it was ready. It
// matches ErrChildExited with errors.Is.
type ExitError = contract.ExitError

// Code maps an error to the control protocol's error code (contract.CodeOf).
func Code(err error) string { return contract.CodeOf(err) }

// ReadReply reads the child's reply frame (for tools and tests that play
// the parent).
func ReadReply(r io.Reader) (Reply, error) {
	var rep Reply
	err := readJSON(r, &rep)
	return rep, err
}
