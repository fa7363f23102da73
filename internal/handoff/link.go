package handoff

import (
	"fmt"
	"time"

	"github.com/baton-go/baton/internal/contract"
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
const EnvLink = contract.EnvLink

// The link's frames and version are defined in internal/contract.
const (
	LinkVersion  = contract.LinkVersion
	LinkHandover = contract.LinkHandover // send your state and named files
	LinkDrain    = contract.LinkDrain    // stop accepting and drain (close Exit)
)

// ErrLink reports a failure on the supervisor link; ErrNoState, an app
// whose StateFunc failed when the supervisor asked for its state.
var (
	ErrLink    = contract.ErrLink
	ErrNoState = contract.ErrNoState
)

type (
	LinkHello   = contract.LinkHello   // a generation's first frame on its link
	LinkRequest = contract.LinkRequest // the supervisor's request
	LinkReply   = contract.LinkReply   // the answer to a LinkRequest
)

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
