package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-go/baton/internal/contract"
)

// Item is one file handed to the child, with its description.
type Item struct {
	Desc FileDesc
	// File is passed as a descriptor on Unix; on Windows its handle is
	// duplicated into the child.
	File *os.File
	// Socket (Windows) is a SOCKET duplicated for the child with
	// WSADuplicateSocket; File is nil then.
	Socket uintptr
}

// Close releases what the item holds for the next generation.
func (it Item) Close() {
	if it.File != nil {
		it.File.Close()
	}
}

// SpawnConfig says what to start and what to hand it.
type SpawnConfig struct {
	Binary string
	// Argv0, when set, is the child's argv[0] (Unix): the path it is known
	// by when Binary is another name for the same file (/proc/self/exe).
	Argv0   string
	Args    []string // without argv[0]
	Env     []string // the child's environment; baton's own variables are replaced
	Items   []Item
	Message Handoff // Files is filled in from Items
	State   []byte
	Logger  *slog.Logger

	// Supervised (Windows) starts the child for a supervisor that stays
	// its parent for the child's whole life: the child is placed in one
	// job object of this process, created on first use with
	// KILL_ON_JOB_CLOSE and never released, so that every generation dies
	// with the supervisor (TerminateProcess included); its stdout and
	// stderr stay pipes read by this process, copied line by line to
	// Stdout and Stderr (the stderr tail still goes into exit errors); and
	// no stderr relay is handed over (the child's RestoreStderr does
	// nothing). On Unix, Supervised, Stdout and Stderr are accepted and
	// ignored: the Unix supervisor starts its generations itself.
	Supervised bool
	// Stdout and Stderr receive a supervised child's output, one whole
	// line per Write (a line longer than 64 KiB is split). nil means this
	// process's own stdout or stderr. Ignored unless Supervised.
	Stdout, Stderr io.Writer
}

// Child is a new generation that has been started and not yet handed over.
type Child struct {
	PID int

	conn    net.Conn
	proc    *os.Process
	tail    *Tail
	exited  chan struct{}
	exitErr *ExitError
	sendErr chan error // result of writing the handoff message
	replies chan replyResult
	once    sync.Once

	reportsEnd bool          // its ready reply said it can report its end
	takesConns bool          // its ready reply said it takes connections (conns.go)
	watched    bool          // Ack asked it to (Watch)
	passing    atomic.Bool   // Ack said Conns and no failure since: PassConns may send
	sendMu     sync.Mutex    // one batch written at a time (conns.go)
	answerMu   sync.Mutex    // guards answers
	answers    []chan int    // batches sent and not answered yet, oldest first
	end        string        // what it reported: EndHandedOver, EndStopping
	endRead    chan struct{} // closed when the report (or EOF) was read
	chose      chan struct{} // closed when it reported an end by choice

	// Platform hooks: afterAck runs once the child owns the sockets (e.g.
	// lets it outlive us), onExit when the process is gone.
	beforeAck  func() // e.g. let the child outlive us
	beforeExit func() // e.g. let the stderr tail arrive
	onExit     func()
}

type replyResult struct {
	r   Reply
	err error
}

// cleanEnv drops the variables that describe this process's own inheritance
// (our handoff channel, systemd socket activation meant for our pid).
func cleanEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case EnvChannel, contract.EnvListenPID, contract.EnvListenFDs, contract.EnvListenFDNames:
			continue
		}
		out = append(out, kv)
	}
	return out
}

// newChild describes a started process. The caller sets its hooks, then
// calls watch, sets conn and calls start.
func newChild(cmd *exec.Cmd, tail *Tail) *Child {
	return &Child{
		PID:     cmd.Process.Pid,
		proc:    cmd.Process,
		tail:    tail,
		exited:  make(chan struct{}),
		sendErr: make(chan error, 1),
		replies: make(chan replyResult, 1),
		endRead: make(chan struct{}),
		chose:   make(chan struct{}),
	}
}

// watch reaps the process and records how it ended.
func (c *Child) watch(cmd *exec.Cmd) {
	go func() {
		err := cmd.Wait()
		if c.beforeExit != nil {
			c.beforeExit()
		}
		c.exitErr = exitError(c.PID, cmd.ProcessState, err, c.tail)
		if c.onExit != nil {
			c.onExit()
		}
		close(c.exited)
	}()
}

func exitError(pid int, ps *os.ProcessState, err error, tail *Tail) *ExitError {
	e := &ExitError{PID: pid, ExitCode: -1, StderrTail: tail.String()}
	if ps == nil {
		e.StderrTail = fmt.Sprintf("%v\n%s", err, e.StderrTail)
		return e
	}
	e.ExitCode = ps.ExitCode()
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Signal = ws.Signal().String()
	}
	return e
}

// start runs the protocol goroutines once the process exists.
func (c *Child) start(msg Handoff, state []byte) {
	go func() {
		c.sendErr <- WriteHandoff(c.conn, msg, state)
	}()
	go func() {
		var r Reply
		err := readJSON(c.conn, &r)
		c.replies <- replyResult{r, err}
	}()
}

// Exited is closed when the child process has exited.
func (c *Child) Exited() <-chan struct{} { return c.exited }

// ExitErr says how the child ended (exit code, and the tail of its stderr
// where this process read it); nil until Exited is closed. It serves for a
// generation that exits after Ack too (ExitError.Brief then says how).
func (c *Child) ExitErr() *ExitError {
	select {
	case <-c.exited:
		return c.exitErr
	default:
		return nil
	}
}

// Kill kills the child at any time, before or after Ack (TerminateProcess
// on Windows, SIGKILL on Unix), without waiting: Exited tells when it is
// gone. Killing a child that has exited already is not an error.
func (c *Child) Kill() error {
	err := c.proc.Kill()
	// ErrProcessDone: it has exited; EINVAL: it has been waited for (the
	// handle is released).
	if errors.Is(err, os.ErrProcessDone) || errors.Is(err, syscall.EINVAL) {
		return nil
	}
	return err
}

// WaitReady waits until the child says it is ready, refuses, exits, or ctx
// ends. It does not kill the child: the caller decides (Abort).
func (c *Child) WaitReady(ctx context.Context) (Reply, error) {
	for {
		select {
		case err := <-c.sendErr:
			if err != nil {
				// The child may have exited or refused already; prefer that
				// story. A write fails like this when the child's end is
				// closed, i.e. normally when it exits: give its exit time to
				// be seen (500 ms was too short on a loaded machine: an exit
				// reported as a protocol error, once in CI).
				select {
				case <-c.exited:
					return Reply{}, c.exitErr
				case rr := <-c.replies:
					if rr.err == nil {
						return c.checkReply(rr.r)
					}
					select {
					case <-c.exited:
						return Reply{}, c.exitErr
					case <-time.After(2 * time.Second):
					}
				case <-time.After(2 * time.Second):
				}
				return Reply{}, fmt.Errorf("%w: sending the handoff message: %v", ErrRefused, err)
			}
			c.sendErr = nil // sent; stop selecting on it
		case rr := <-c.replies:
			if rr.err != nil {
				// The channel closed without a reply: normally the child died.
				select {
				case <-c.exited:
					return Reply{}, c.exitErr
				case <-time.After(2 * time.Second):
				}
				return Reply{}, fmt.Errorf("%w: no reply on the handoff channel: %v", ErrRefused, rr.err)
			}
			return c.checkReply(rr.r)
		case <-c.exited:
			return Reply{}, c.exitErr
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return Reply{}, fmt.Errorf("%w while waiting for pid %d to get ready; it was killed", ErrCanceled, c.PID)
			}
			return Reply{}, fmt.Errorf("%w (pid %d): %w", ErrReadyTimeout, c.PID, ctx.Err())
		}
	}
}

func (c *Child) checkReply(r Reply) (Reply, error) {
	switch r.Type {
	case "ready":
		c.reportsEnd = r.ReportsEnd
		c.takesConns = r.TakesConns
		return r, nil
	case "refused":
		return r, fmt.Errorf("%w: new generation (pid %d) refused the handoff: %s", contract.RefusalError(r.Code), c.PID, r.Reason)
	}
	return r, fmt.Errorf("%w: unexpected reply type %q", ErrRefused, r.Type)
}

// Ack tells the child that the sockets are now its own. With watch, a
// child that can report its end keeps the channel open for it, and
// EndedByChoice tells its chosen end from a crash. With conns, a child
// that takes connections keeps the channel open for PassConns.
func (c *Child) Ack(watch, conns bool) error {
	if c.beforeAck != nil {
		c.beforeAck()
	}
	watch = watch && c.reportsEnd
	conns = conns && c.takesConns
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	err := writeJSON(c.conn, Ack{Go: true, Watch: watch, Conns: conns})
	if err != nil || !(watch || conns) {
		c.conn.Close()
		return err
	}
	c.watched = watch
	c.passing.Store(conns)
	go func() {
		defer close(c.endRead)
		defer c.conn.Close()
		for {
			var r Reply
			if readJSON(c.conn, &r) != nil || r.PID != c.PID {
				return
			}
			switch r.Type {
			case ConnsTaken:
				if !c.answerConns(r.Taken) {
					return // nobody asked: not what we agreed on
				}
			case EndHandedOver, EndStopping:
				if c.end == "" {
					c.end = r.Type
					close(c.chose)
				}
			default:
				return
			}
		}
	}()
	return nil
}

// Chose is closed when a watched child has said that it ends by choice
// (it may still be draining). It is never closed for a child that is not
// watched.
func (c *Child) Chose() <-chan struct{} { return c.chose }

// EndedByChoice waits until the child has exited and reports whether it
// ended by choice (it handed over to its own successor, or was told to
// stop) rather than by a crash. A watched child says so on the channel; of
// one that cannot (an older binary), a clean exit (status 0) is taken for
// a choice.
func (c *Child) EndedByChoice() bool {
	<-c.exited
	if c.watched {
		<-c.endRead // the channel ends with the process at the latest
		return c.end != ""
	}
	return c.exitErr != nil && c.exitErr.ExitCode == 0 && c.exitErr.Signal == ""
}

// Abort tells the child the upgrade is off, kills it and waits (bounded) for
// it to be gone, so that no half-started generation is left behind.
func (c *Child) Abort(reason string) {
	c.once.Do(func() {
		if c.conn != nil {
			_ = c.conn.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			_ = writeJSON(c.conn, Ack{Go: false, Reason: reason})
			c.conn.Close()
		}
		_ = c.proc.Kill()
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
		}
	})
}

// failed aborts the child after a setup error; if it has exited meanwhile,
// its exit is the better story.
func (c *Child) failed(err error) error {
	c.Abort(err.Error())
	select {
	case <-c.exited:
		if c.exitErr != nil && c.exitErr.ExitCode != -1 {
			return c.exitErr
		}
	default:
	}
	return err
}

// Tail keeps the last bytes written to it: the end of a failing child's
// output, for the error message. Safe for concurrent writers.
type Tail struct {
	mu  sync.Mutex
	buf []byte
	max int
}

// NewTail keeps the last max bytes.
func NewTail(max int) *Tail { return &Tail{max: max} }

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimRight(string(t.buf), "\n")
}

// stderrTailBytes is how much of a failing child's stderr is reported.
const stderrTailBytes = 2048

var _ io.Writer = (*Tail)(nil)

// statBinary checks what every platform requires of the binary to start:
// it exists and is not a directory.
func statBinary(path string) (os.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, errBinary(path, err)
	}
	if fi.IsDir() {
		return nil, errBinary(path, errors.New("is a directory"))
	}
	return fi, nil
}

// errBinary wraps a start failure so that callers can test ErrBinary.
func errBinary(path string, err error) error {
	if errors.Is(err, ErrBinary) {
		return err
	}
	return fmt.Errorf("%w: %s: %v", ErrBinary, path, err)
}
