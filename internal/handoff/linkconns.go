package handoff

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"
)

// Client connections under `baton run` (issue 11): a draining library
// generation cannot reach the serving one, so the supervisor carries its
// idle client connections. After the drain request it asks the draining
// generation again and again for what it passes on (LinkConnsPull), and
// gives each batch to the serving generation (LinkConns); the next pull
// tells the draining one how many were taken. Both ends said Conns in
// their LinkHello, or none of this is asked.
//
//	supervisor -> draining   LinkRequest{Op: "conns_pull", Taken: k}
//	draining -> supervisor   LinkReply{N: n, Network, Addr} + n sockets
//	supervisor -> serving    LinkRequest{Op: "conns", N: n, ...} + n sockets
//	serving -> supervisor    LinkReply{Taken: k}

// LinkConnsHooks are a library generation's part in it.
type LinkConnsHooks struct {
	// Take serves connections passed by a draining generation; it owns
	// files, as the function given to Inherited.TakeConns.
	Take func(network, addr string, files []*os.File) int
	// Next returns the next batch this generation passes on (at most
	// maxConnsPerMsg, MaxConnsPerMsg), waiting at most wait; none when
	// there is nothing now.
	Next func(wait time.Duration) (network, addr string, conns []net.Conn)
	// Result tells the batch Next returned last how many the serving
	// generation took (0 when it could not be delivered).
	Result func(taken int)
}

// MaxConnsPerMsg is the most connections one batch may hold.
const MaxConnsPerMsg = maxConnsPerMsg

// pullWait is how long a pull waits for a batch before it answers "none
// now" (the supervisor asks again).
const pullWait = 2 * time.Second

// serveConns answers LinkConnsPull and LinkConns (generation side). An
// error leaves the stream out of step: Serve returns it.
func (l *LinkConn) serveConns(req LinkRequest, h *LinkConnsHooks, pulled *bool) error {
	switch req.Op {
	case LinkConns:
		if req.N <= 0 || req.N > maxConnsPerMsg {
			return linkErr("%d connections announced", req.N)
		}
		files, err := recvConns(l.c, req.N)
		if err != nil {
			return linkErr("receiving %d connections: %v", req.N, err)
		}
		taken := 0
		if h.Take != nil {
			taken = h.Take(req.Network, req.Addr, files)
		} else {
			for _, f := range files {
				f.Close()
			}
		}
		return writeJSON(l.c, LinkReply{OK: true, Taken: taken})
	default: // LinkConnsPull
		if *pulled {
			*pulled = false
			if h.Result != nil {
				h.Result(req.Taken)
			}
		}
		var network, addr string
		var conns []net.Conn
		if h.Next != nil {
			network, addr, conns = h.Next(pullWait)
		}
		if len(conns) > maxConnsPerMsg {
			if h.Result != nil {
				h.Result(0)
			}
			conns = nil
		}
		if err := writeJSON(l.c, LinkReply{OK: true, Network: network, Addr: addr, N: len(conns)}); err != nil {
			if len(conns) > 0 && h.Result != nil {
				h.Result(0)
			}
			return err
		}
		if len(conns) == 0 {
			return nil
		}
		if err := sendConns(l.c, conns); err != nil {
			if h.Result != nil {
				h.Result(0)
			}
			return err
		}
		*pulled = true
		return nil
	}
}

// PassesConns reports whether the generation at the other end passes and
// takes client connections (supervisor side).
func (l *LinkConn) PassesConns() bool { return l.conns }

// PullConns asks a draining generation for the next client connections it
// passes on, telling it first how many of the previous batch were taken
// (supervisor side). None (no error) means nothing now: ask again while it
// lives. The files are the caller's.
func (l *LinkConn) PullConns(ctx context.Context, prevTaken int) (network, addr string, files []*os.File, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return "", "", nil, err
	}
	if !l.conns {
		return "", "", nil, ErrConnsNotTaken
	}
	stop := l.deadline(ctx)
	defer stop()
	if err := writeJSON(l.c, LinkRequest{Op: LinkConnsPull, Taken: prevTaken}); err != nil {
		return "", "", nil, l.fail(linkErr("asking for connections: %v", err))
	}
	var rep LinkReply
	if err := readJSON(l.c, &rep); err != nil {
		return "", "", nil, l.fail(linkErr("waiting for connections: %v", err))
	}
	if !rep.OK {
		return "", "", nil, linkErr("connections: %s", rep.Error)
	}
	if rep.N == 0 {
		return "", "", nil, nil
	}
	if rep.N < 0 || rep.N > maxConnsPerMsg {
		return "", "", nil, l.fail(linkErr("%d connections announced", rep.N))
	}
	files, err = recvConns(l.c, rep.N)
	if err != nil {
		return "", "", nil, l.fail(linkErr("receiving %d connections: %v", rep.N, err))
	}
	return rep.Network, rep.Addr, files, nil
}

// PassConns gives the serving generation client connections accepted on
// (network, addr) and returns how many it took (supervisor side). The
// files stay the caller's (the generation gets duplicates).
//
// Errors matching ErrConnsNotTaken mean that nothing was sent (or that
// the generation refused the batch): the caller may place the
// connections elsewhere. Other errors mean the link failed mid-exchange.
func (l *LinkConn) PassConns(ctx context.Context, network, addr string, files []*os.File) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrConnsNotTaken, err)
	}
	if err := ctx.Err(); err != nil {
		// Given up while another exchange held the link: nothing sent.
		return 0, fmt.Errorf("%w: %w", ErrConnsNotTaken, err)
	}
	if !l.conns {
		return 0, ErrConnsNotTaken
	}
	if len(files) == 0 || len(files) > maxConnsPerMsg {
		return 0, fmt.Errorf("%w: %d connections in one batch", ErrConnsNotTaken, len(files))
	}
	stop := l.deadline(ctx)
	defer stop()
	if err := writeJSON(l.c, LinkRequest{Op: LinkConns, Network: network, Addr: addr, N: len(files)}); err != nil {
		return 0, l.fail(linkErr("passing connections: %v", err))
	}
	if err := sendFiles(l.c, files); err != nil {
		return 0, l.fail(linkErr("passing connections: %v", err))
	}
	var rep LinkReply
	if err := readJSON(l.c, &rep); err != nil {
		return 0, l.fail(linkErr("waiting for the connections' answer: %v", err))
	}
	if !rep.OK {
		return 0, fmt.Errorf("%w: %w", ErrConnsNotTaken, linkErr("connections refused: %s", rep.Error))
	}
	return rep.Taken, nil
}
