package handoff

import (
	"context"
	"fmt"
	"net"
	"sync"
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

	LinkConnsPull = contract.LinkConnsPull // linkconns.go
	LinkConns     = contract.LinkConns
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

// The exchanges on a link, the same on every OS; how named files cross
// (SCM_RIGHTS, DuplicateHandle) is sendHanded/recvHanded, per OS.

// LinkConn is one end of a supervisor link (see link.go).
type LinkConn struct {
	c      net.Conn
	peer   int        // the other end's pid (from the kernel where it tells)
	mu     sync.Mutex // one exchange at a time
	broken bool       // an exchange failed half-way: the stream is out of step
	conns  bool       // the generation passes and takes client connections (linkconns.go)
}

// Close closes the link.
func (l *LinkConn) Close() error { return l.c.Close() }

// PeerPID is the pid of the process at the other end.
func (l *LinkConn) PeerPID() int { return l.peer }

// fail closes the link after a failed exchange: what is left in the stream
// must never be read as the answer to a later request.
func (l *LinkConn) fail(err error) error {
	l.broken = true
	l.c.Close()
	return err
}

// Broken reports whether an exchange failed half-way (the link is closed).
func (l *LinkConn) Broken() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.broken
}

func (l *LinkConn) usable() error {
	if l.broken {
		return linkErr("closed after an earlier failed exchange")
	}
	return nil
}

// Serve answers the supervisor's requests until the link closes:
// handover returns what the next generation gets (the items stay the
// caller's), drain makes this generation drain, conns (may be nil) passes
// and takes client connections (linkconns.go).
func (l *LinkConn) Serve(handover func() (*Handed, error), drain func(), conns *LinkConnsHooks) error {
	var pulled bool // a batch went out on the last LinkConnsPull
	for {
		var req LinkRequest
		if err := readJSON(l.c, &req); err != nil {
			return err
		}
		switch req.Op {
		case LinkConnsPull, LinkConns:
			if conns == nil {
				if err := writeJSON(l.c, LinkReply{Code: "protocol", Error: "this generation does not pass connections"}); err != nil {
					return err
				}
				continue
			}
			if err := l.serveConns(req, conns, &pulled); err != nil {
				return err
			}
		case LinkHandover:
			h, err := handover()
			if err != nil {
				if werr := writeJSON(l.c, LinkReply{Code: "state", Error: err.Error()}); werr != nil {
					return werr
				}
				continue
			}
			if err := writeJSON(l.c, LinkReply{OK: true}); err != nil {
				return err
			}
			if err := sendHanded(l.c, l.peer, h); err != nil {
				return err
			}
		case LinkDrain:
			drain()
			if err := writeJSON(l.c, LinkReply{OK: true}); err != nil {
				return err
			}
		default:
			if err := writeJSON(l.c, LinkReply{Code: "protocol", Error: fmt.Sprintf("unknown link operation %q", req.Op)}); err != nil {
				return err
			}
		}
	}
}

// Give sends a generation what it inherits (supervisor side). The items
// stay the caller's (the generation gets duplicates).
func (l *LinkConn) Give(h *Handed) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	_ = l.c.SetWriteDeadline(time.Now().Add(linkTimeout))
	defer l.c.SetWriteDeadline(time.Time{})
	if err := sendHanded(l.c, l.peer, h); err != nil {
		return l.fail(err)
	}
	return nil
}

// Take asks the generation for its state and named files (supervisor
// side). When the app could not make its state, the error wraps
// ErrNoState.
func (l *LinkConn) Take(ctx context.Context) (*Handed, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return nil, err
	}
	stop := l.deadline(ctx)
	defer stop()
	if err := writeJSON(l.c, LinkRequest{Op: LinkHandover}); err != nil {
		return nil, l.fail(linkErr("asking for the state: %v", err))
	}
	var rep LinkReply
	if err := readJSON(l.c, &rep); err != nil {
		return nil, l.fail(linkErr("waiting for the state: %v", err))
	}
	if !rep.OK {
		return nil, fmt.Errorf("%w: %s", ErrNoState, rep.Error) // a whole answer: the link stays usable
	}
	h, err := recvHanded(l.c, MaxStateLimit)
	if err != nil {
		return nil, l.fail(err)
	}
	return h, nil
}

// Drain asks the generation to stop accepting and drain (supervisor side).
func (l *LinkConn) Drain(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	stop := l.deadline(ctx)
	defer stop()
	if err := writeJSON(l.c, LinkRequest{Op: LinkDrain}); err != nil {
		return l.fail(linkErr("drain: %v", err))
	}
	var rep LinkReply
	if err := readJSON(l.c, &rep); err != nil {
		return l.fail(linkErr("drain: %v", err))
	}
	if !rep.OK {
		return linkErr("drain refused: %s", rep.Error)
	}
	return nil
}

// deadline bounds an exchange by linkTimeout and ctx.
func (l *LinkConn) deadline(ctx context.Context) (stop func()) {
	_ = l.c.SetDeadline(time.Now().Add(linkTimeout))
	after := context.AfterFunc(ctx, func() { _ = l.c.SetDeadline(time.Now()) })
	return func() {
		after()
		_ = l.c.SetDeadline(time.Time{})
	}
}

// acceptHello reads a just-accepted generation's hello (bounded by
// linkTimeout and ctx) and refuses it when the kernel's pid of the peer
// (kpid, where known) is not the one it says, or it speaks another link
// version. c is closed on a refusal.
func acceptHello(ctx context.Context, c net.Conn, kpid int, known bool) (*LinkConn, LinkHello, error) {
	var hello LinkHello
	_ = c.SetReadDeadline(time.Now().Add(linkTimeout))
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	err := readJSON(c, &hello)
	stop()
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, hello, ctx.Err()
		}
		return nil, hello, linkErr("hello: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	if known && kpid != hello.PID {
		c.Close()
		return nil, hello, linkErr("the process connected (pid %d) says it is pid %d", kpid, hello.PID)
	}
	if hello.Version != LinkVersion {
		c.Close()
		return nil, hello, linkErr("generation (pid %d) speaks link version %d, this supervisor %d", hello.PID, hello.Version, LinkVersion)
	}
	return &LinkConn{c: c, peer: hello.PID, conns: hello.Conns && connsSupported}, hello, nil
}
