package handoff

import (
	"errors"
	"fmt"
	"time"
)

// The supervisor link: under `baton run`, a generation that uses the baton
// library gets its sockets from the supervisor by socket activation (so
// that any app can be supervised), and everything else the handoff carries
// (the state blob, named files, the generation number) over a link to the
// supervisor. The supervisor gives each generation the path of a socket of
// its own in EnvLink; the library connects to it in New. The supervisor
// then plays the parent's part of the handoff, and later asks the
// generation for its state when the next one starts, and to drain.
//
// Frames, as on the handoff channel (length-prefixed JSON):
//
//	generation -> supervisor   LinkHello
//	supervisor -> generation   Handoff + state blob + named files
//	then, any number of times:
//	supervisor -> generation   LinkRequest{Op: "handover"}
//	generation -> supervisor   LinkReply, then (if OK) Handoff + state + files
//	supervisor -> generation   LinkRequest{Op: "drain"}
//	generation -> supervisor   LinkReply
//
// Named files travel as descriptors (SCM_RIGHTS) in one message of one byte
// right after the frame that describes them.

// EnvLink names the variable that holds the path of a generation's
// supervisor link.
const EnvLink = "BATON_LINK"

// LinkVersion is the version of the link protocol. A supervisor closes the
// link of a generation that speaks another one; the library then serves
// without the previous generation's state and is drained by signal.
const LinkVersion = 1

// Link operations.
const (
	LinkHandover = "handover" // send your state and named files
	LinkDrain    = "drain"    // stop accepting and drain (close Exit)
)

// ErrLink reports a failure on the supervisor link; ErrNoState, an app
// whose StateFunc failed when the supervisor asked for its state.
var (
	ErrLink    = errors.New("supervisor link")
	ErrNoState = errors.New("the serving generation could not hand over its state")
)

// LinkHello is a generation's first frame on its link.
type LinkHello struct {
	Version int `json:"v"`
	PID     int `json:"pid"`
}

// LinkRequest is the supervisor's request.
type LinkRequest struct {
	Op string `json:"op"`
}

// LinkReply answers a LinkRequest.
type LinkReply struct {
	OK    bool   `json:"ok"`
	Code  string `json:"code,omitempty"` // "state" when the state could not be made
	Error string `json:"error,omitempty"`
}

// Handed is what one generation hands to the next through the supervisor.
type Handed struct {
	Msg   Handoff
	State []byte
	Items []Item // named files; Items[i].Desc is Msg.Files[i]
}

// Close releases the files.
func (h *Handed) Close() {
	if h == nil {
		return
	}
	for _, it := range h.Items {
		it.Close()
	}
	h.Items = nil
}

// linkTimeout bounds one exchange on a link: both ends are local processes
// that answer at once unless something is wrong.
const linkTimeout = 10 * time.Second

func linkErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrLink, fmt.Sprintf(format, a...))
}
