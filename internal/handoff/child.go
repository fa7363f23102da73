package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/baton-go/baton/internal/contract"
)

// processStart is taken when the handoff package initialises, as early in
// the process as baton can observe: the child's "app start-up" time is
// measured from here to Ready.
var processStart = time.Now()

// SinceStart is the time elapsed since this process started (as seen by
// baton).
func SinceStart() time.Duration { return time.Since(processStart) }

// Inherited is what a child received from its parent.
type Inherited struct {
	Msg   Handoff
	State []byte
	Files []*os.File // Files[i] belongs to Msg.Files[i]

	conn    net.Conn
	stderr  stderrSwitch // how to point stderr back at the parent's own
	unguard func()       // undoes guardStderrPipe

	endMu sync.Mutex
	watch net.Conn // kept after the go-ahead when the parent watches us or passes connections

	take func(network, addr string, files []*os.File) int // TakeConns (conns.go)
}

// Receive reads the handoff when this process was started by a baton
// parent; it returns (nil, nil) otherwise. On a bad message it tells the
// parent why (so the parent's Upgrade reports it) and returns the error.
func Receive(timeout time.Duration, maxState int64) (*Inherited, error) {
	conn, err := openChannel()
	if err != nil || conn == nil {
		return nil, err
	}
	// Until Ready our stderr is a pipe to the parent: if the parent dies, a
	// log line must not kill us with SIGPIPE.
	unguard := guardStderrPipe()
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	h, state, err := ReadHandoff(conn, maxState)
	_ = conn.SetReadDeadline(time.Time{})
	if err != nil {
		_ = writeJSON(conn, Reply{Type: "refused", PID: os.Getpid(), Code: contract.RefusalCode(err), Reason: err.Error()})
		conn.Close()
		return nil, err
	}
	in := &Inherited{Msg: h, State: state, conn: conn, unguard: unguard}
	in.Files, in.stderr, err = inheritedFiles(h)
	if err != nil {
		_ = writeJSON(conn, Reply{Type: "refused", PID: os.Getpid(), Code: contract.RefuseProtocol, Reason: err.Error()})
		conn.Close()
		return nil, err
	}
	return in, nil
}

// stderrSwitch points this process's stderr back at its parent's own
// (platform code).
type stderrSwitch interface{ restore() error }

// Ready tells the parent that this generation serves, then waits for its
// go-ahead. It returns nil when the sockets are ours (also when the parent
// vanished: somebody has to serve), ErrAborted when the parent called the
// upgrade off (this process should exit).
func (in *Inherited) Ready(ctx context.Context) error {
	keep := false
	defer func() {
		if !keep {
			in.conn.Close()
		}
	}()
	r := Reply{Type: "ready", PID: os.Getpid(), AppStartup: SinceStart(), ReportsEnd: true, TakesConns: connsSupported && in.take != nil}
	if err := writeJSON(in.conn, r); err != nil {
		return fmt.Errorf("%w: %v", ErrParentGone, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = in.conn.SetReadDeadline(time.Now()) })
	defer stop()
	var ack Ack
	if err := readJSON(in.conn, &ack); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: %v", ErrParentGone, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: no go-ahead: %w", ErrAborted, ctx.Err())
		}
		return fmt.Errorf("%w: %v", ErrParentGone, err)
	}
	if !ack.Go {
		return fmt.Errorf("%w: %s", ErrAborted, ack.Reason)
	}
	if ack.Watch || ack.Conns {
		// The parent guards us through a probation (ReportEnd tells it
		// that our end was chosen), or passes us client connections
		// while it drains: the channel stays open.
		keep = true
		_ = in.conn.SetReadDeadline(time.Time{})
		in.endMu.Lock()
		in.watch = in.conn
		in.endMu.Unlock()
		go in.serveChannel(in.conn, ack.Conns && in.take != nil)
	}
	return nil
}

// ReportEnd tells a parent that watches us (Ack.Watch) that this
// generation ends by choice (EndHandedOver, EndStopping), so that it does
// not take our exit for a crash; then the channel is closed. Without a
// watching parent, and after the first call, it does nothing.
func (in *Inherited) ReportEnd(kind string) {
	if in == nil {
		return
	}
	in.endMu.Lock()
	c := in.watch
	in.watch = nil
	in.endMu.Unlock()
	if c == nil {
		return
	}
	// Bounded: a parent that is gone must not hold up our handover.
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeJSON(c, Reply{Type: kind, PID: os.Getpid()})
	c.Close()
}

// RestoreStderr points this process's stderr back at the parent's own
// stderr; until then it was a pipe that the parent read to report the tail
// of a failed start.
func (in *Inherited) RestoreStderr() error {
	if in.stderr == nil {
		return nil
	}
	err := in.stderr.restore()
	in.stderr = nil
	if in.unguard != nil {
		in.unguard()
	}
	return err
}

// Refuse tells the parent that this generation will not take over (for
// example because it is being stopped before it got ready).
func (in *Inherited) Refuse(code, reason string) {
	_ = writeJSON(in.conn, Reply{Type: "refused", PID: os.Getpid(), Code: code, Reason: reason})
	in.conn.Close()
}
