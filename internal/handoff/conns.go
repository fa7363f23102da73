package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Client connections passed from a generation that handed over to its
// successor (issue 11): the old generation's HTTP drain gives up idle
// keep-alive connections instead of closing them, and the new one serves
// them as if it had just accepted them. They travel on the handoff
// channel, which stays open after the go-ahead for that (Ack.Conns).

// ConnsMsg announces connections accepted on the listener (Network, Addr);
// their sockets follow it (platform code: one SCM_RIGHTS message on Unix).
type ConnsMsg struct {
	Type    string `json:"type"` // "conns"
	Network string `json:"network"`
	Addr    string `json:"addr"`
	N       int    `json:"n"`
}

const (
	msgConns = "conns"
	// ConnsTaken is the child's answer to each ConnsMsg (Reply.Taken).
	ConnsTaken = "conns_taken"
	// maxConnsPerMsg keeps one message's descriptors under Linux's limit
	// for one SCM_RIGHTS message (253).
	maxConnsPerMsg = 250
	// connsTimeout bounds one message's delivery and its answer.
	connsTimeout = 10 * time.Second
)

// ErrConnsNotTaken is returned by PassConns when the child does not take
// connections (an older binary, a platform without it, or the channel is
// gone): the caller keeps serving them.
var ErrConnsNotTaken = errors.New("the new generation does not take connections")

// TakeConns registers take, which serves the connections a parent passes
// after the go-ahead; call it before Ready. take owns the files: it serves
// the first ones it can, in order, closes every file (the connections it
// serves hold their own descriptors), and returns how many it serves.
func (in *Inherited) TakeConns(take func(network, addr string, files []*os.File) int) {
	in.take = take
}

// serveChannel reads what the parent sends on the channel it keeps after
// the go-ahead: connections (when conns), else nothing but its EOF. It
// closes the channel once the parent is gone (the parent exits after its
// drain and our probation): the descriptor must not outlive it.
func (in *Inherited) serveChannel(c net.Conn, conns bool) {
	for {
		var m ConnsMsg
		if err := readJSON(c, &m); err != nil {
			break
		}
		if !conns || m.Type != msgConns || m.N <= 0 || m.N > maxConnsPerMsg {
			break // not what we agreed on: stop listening
		}
		files, err := recvConns(c, m.N)
		if err != nil {
			break
		}
		// Under endMu: ReportEnd (we hand over ourselves) must not close
		// the channel between taking connections and saying so; once it
		// has, we take none, and the parent keeps them.
		in.endMu.Lock()
		taken := 0
		if in.watch == c && in.take != nil {
			taken = in.take(m.Network, m.Addr, files)
		} else {
			for _, f := range files {
				f.Close()
			}
		}
		if in.watch == c {
			_ = c.SetWriteDeadline(time.Now().Add(connsTimeout))
			_ = writeJSON(c, Reply{Type: ConnsTaken, PID: os.Getpid(), Taken: taken})
		}
		in.endMu.Unlock()
	}
	in.endMu.Lock()
	if in.watch == c {
		in.watch = nil
		c.Close()
	}
	in.endMu.Unlock()
}

// TakesConns reports whether PassConns may pass connections (the Ack said
// Conns and no earlier failure turned it off).
func (c *Child) TakesConns() bool { return c.passing.Load() }

// PassConns passes conns, accepted on the listener (network, addr), to
// the child, which serves them from now on, and returns how many it took:
// conns[:n] are the child's (the caller closes its own descriptors without
// a word to the client), conns[n:] stay with the caller, and err says why.
//
// Calls may run concurrently, and are pipelined: a call's batches go out
// one after the other, each once the previous one is answered, but while
// one call waits for its answer another may send (the child answers in
// the order it received; each answer is matched to its batch). ctx bounds
// the waits; when it ends before an answer, the batch counts as not taken
// (as when the child does not answer in time).
func (c *Child) PassConns(ctx context.Context, network, addr string, conns []net.Conn) (int, error) {
	passed := 0
	for len(conns) > 0 {
		batch := conns[:min(len(conns), maxConnsPerMsg)]
		n, err := c.passBatch(ctx, network, addr, batch)
		passed += n
		if err != nil {
			return passed, err
		}
		conns = conns[len(batch):]
	}
	return passed, nil
}

// passBatch sends one batch and waits for its answer.
func (c *Child) passBatch(ctx context.Context, network, addr string, batch []net.Conn) (int, error) {
	if !c.passing.Load() {
		return 0, ErrConnsNotTaken
	}
	// Duplicated before anything is written: a failure here (EMFILE)
	// leaves the channel in step, and the next batch may go.
	out, err := prepareConns(batch)
	if err != nil {
		return 0, fmt.Errorf("%w: %d connections for pid %d: %w", ErrConnsNotTaken, len(batch), c.PID, err)
	}
	answer := make(chan int, 1)
	c.sendMu.Lock()
	if !c.passing.Load() {
		c.sendMu.Unlock()
		out.close()
		return 0, ErrConnsNotTaken
	}
	deadline := time.Now().Add(connsTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.conn.SetWriteDeadline(deadline)
	// Queued before the send: the answer may come before the send returns.
	c.answerMu.Lock()
	c.answers = append(c.answers, answer)
	c.answerMu.Unlock()
	err = writeJSON(c.conn, ConnsMsg{Type: msgConns, Network: network, Addr: addr, N: len(batch)})
	if err == nil {
		err = out.send(c.conn)
	}
	out.close()
	if err != nil {
		// The channel may be out of step now: no more tries. The child
		// cannot answer a batch it did not receive: the last queued
		// answer is ours, withdrawn.
		c.passing.Store(false)
		c.answerMu.Lock()
		c.answers = c.answers[:len(c.answers)-1]
		c.answerMu.Unlock()
		c.sendMu.Unlock()
		return 0, fmt.Errorf("%w: passing %d connections to pid %d: %w", ErrConnsNotTaken, len(batch), c.PID, err)
	}
	c.sendMu.Unlock()

	timer := time.NewTimer(connsTimeout)
	defer timer.Stop()
	select {
	case n := <-answer:
		n = max(min(n, len(batch)), 0)
		if n < len(batch) {
			return n, fmt.Errorf("%w: pid %d took %d of %d connections", ErrConnsNotTaken, c.PID, n, len(batch))
		}
		return n, nil
	case <-c.endRead:
		select {
		case n := <-answer: // answered just before the end
			n = max(min(n, len(batch)), 0)
			if n < len(batch) {
				return n, fmt.Errorf("%w: pid %d took %d of %d connections, then closed the channel", ErrConnsNotTaken, c.PID, n, len(batch))
			}
			return n, nil
		default:
		}
		c.passing.Store(false)
		return 0, fmt.Errorf("%w: pid %d closed the channel", ErrConnsNotTaken, c.PID)
	case <-timer.C:
		// It may serve them or not: we cannot tell. Keeping them is the
		// lesser harm (the client may see two servers reading). Our queued
		// answer stays: a late one is matched to it and dropped.
		c.passing.Store(false)
		return 0, fmt.Errorf("%w: pid %d did not answer within %s", ErrConnsNotTaken, c.PID, connsTimeout)
	case <-ctx.Done():
		c.passing.Store(false)
		return 0, fmt.Errorf("%w: no answer from pid %d on %d connections: %w", ErrConnsNotTaken, c.PID, len(batch), ctx.Err())
	}
}

// answerConns gives the child's answer to the oldest batch waiting for
// one, and reports false when none waits (not what we agreed on).
func (c *Child) answerConns(taken int) bool {
	c.answerMu.Lock()
	defer c.answerMu.Unlock()
	if len(c.answers) == 0 {
		return false
	}
	ch := c.answers[0]
	c.answers[0] = nil
	c.answers = c.answers[1:]
	ch <- taken // buffered: a caller that gave up does not block us
	return true
}
