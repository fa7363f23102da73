package handoff

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/baton-go/baton/internal/winpipe"
	"github.com/baton-go/baton/internal/winsock"
	"golang.org/x/sys/windows"
)

// On Windows no socket can be inherited usefully (see docs/windows.md):
//
//   - the parent creates a one-client named pipe, starts the child with the
//     pipe's name in BATON_HANDOFF and waits until the child connects; the
//     client's pid is checked, so no other process can take the handoff;
//   - each listening socket is duplicated for the child's pid with
//     WSADuplicateSocket and the protocol info travels in FileDesc.Data;
//     named files are duplicated into the child with DuplicateHandle;
//   - until the handover the child sits in a job object that kills it if
//     the parent dies half-way; after the go-ahead the job lets it live on.

// realStderr is where this process's stderr really goes: os.Stderr at
// first; in a generation started by an upgrade, the parent's real stderr
// once the handover is done (os.Stderr, and what was made from it, stays
// the relay pipe).
var realStderr = os.Stderr

// connectWait bounds how long a child may take to connect to its handoff
// pipe (it does so in baton.New, early in main).
const connectWait = 30 * time.Second

func checkBinary(path string) error {
	_, err := statBinary(path)
	return err
}

// Spawn starts the new generation, waits (bounded by ctx) until it has
// connected to its handoff pipe, and sends it the handoff.
func Spawn(ctx context.Context, cfg SpawnConfig) (*Child, error) {
	if err := checkBinary(cfg.Binary); err != nil {
		return nil, err
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	path := fmt.Sprintf(`\\.\pipe\baton-handoff-%d-%s`, os.Getpid(), hex.EncodeToString(rnd[:]))
	sddl, err := winpipe.OwnerOnlySDDL()
	if err != nil {
		return nil, fmt.Errorf("handoff channel: %w", err)
	}
	ln, err := winpipe.Listen(path, sddl)
	if err != nil {
		return nil, fmt.Errorf("handoff channel: %w", err)
	}
	defer ln.Close() // one client only

	if cfg.Supervised {
		return spawnSupervised(ctx, cfg, ln, path)
	}
	job, err := newStartupJob()
	if err != nil && cfg.Logger != nil {
		cfg.Logger.Warn("no job object for the new generation; it may outlive a parent that dies mid-upgrade", "err", err)
	}
	// The child's stderr is a pipe that we read (the tail of a failed start
	// goes into the error); after the handover the child relays it itself.
	tail := NewTail(stderrTailBytes)
	pr, pw, err := os.Pipe()
	if err != nil {
		job.close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd := exec.Command(cfg.Binary, cfg.Args...)
	cmd.Env = append(cleanEnv(cfg.Env), EnvChannel+"="+path)
	cmd.Stdout = os.Stdout
	cmd.Stderr = pw
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		job.close()
		return nil, errBinary(cfg.Binary, err)
	}
	copied := make(chan struct{})
	go func() {
		// Ends when the child and everything it started closed the pipe.
		io.Copy(io.MultiWriter(realStderr, tail), pr)
		pr.Close()
		close(copied)
	}()
	c := newChild(cmd, tail)
	// exitErr must include what the child wrote last: wait (bounded) for
	// the copy before reporting the exit.
	c.beforeExit = func() {
		select {
		case <-copied:
		case <-time.After(time.Second):
		}
	}
	if err := job.assign(c.PID); err != nil && cfg.Logger != nil {
		cfg.Logger.Warn("new generation not placed in a job object", "pid", c.PID, "err", err)
	}
	// Let the child outlive us *before* telling it the sockets are its own:
	// if we died in between, a kill-on-close job would take it along.
	c.beforeAck = job.release
	c.onExit = job.close
	c.watch(cmd)

	return handOff(ctx, cfg, ln, c, func() []uint64 {
		relayPipe, err1 := duplicateInto(windows.Handle(pr.Fd()), c.PID)
		realForChild, err2 := duplicateInto(windows.Handle(realStderr.Fd()), c.PID)
		if err1 != nil || err2 != nil {
			if cfg.Logger != nil {
				cfg.Logger.Warn("the new generation's stderr cannot be relayed after this process exits", "err", errors.Join(err1, err2))
			}
			return nil
		}
		return []uint64{uint64(relayPipe), uint64(realForChild)}
	})
}

// handOff waits for the started child c to connect to ln, then sends it
// the handoff: cfg.Message with the items duplicated into it, and the
// stderr relay that relay returns (nil for none).
func handOff(ctx context.Context, cfg SpawnConfig, ln net.Listener, c *Child, relay func() []uint64) (*Child, error) {
	conn, err := acceptChild(ctx, ln, c)
	if err != nil {
		c.Abort(err.Error())
		if errors.Is(err, ErrChildExited) {
			return nil, c.exitErr
		}
		return nil, err
	}
	c.conn = conn

	msg := cfg.Message
	msg.Files = msg.Files[:0:0]
	msg.StderrRelay = relay()
	for _, it := range cfg.Items {
		d := it.Desc
		switch {
		case it.Socket != 0:
			if d.Data, err = winsock.Duplicate(windows.Handle(it.Socket), uint32(c.PID)); err != nil {
				return nil, c.failed(fmt.Errorf("handing %s %s to pid %d: %w", d.Network, d.Addr, c.PID, err))
			}
		case it.File != nil:
			h, err := duplicateInto(windows.Handle(it.File.Fd()), c.PID)
			if err != nil {
				return nil, c.failed(fmt.Errorf("handing file %s to pid %d: %w", d.Name, c.PID, err))
			}
			d.Data = binary.LittleEndian.AppendUint64(nil, uint64(h))
		}
		msg.Files = append(msg.Files, d)
	}
	c.start(msg, cfg.State)
	return c, nil
}

// acceptChild waits for the child to connect to the handoff pipe, and
// checks that it is the child.
func acceptChild(ctx context.Context, ln net.Listener, c *Child) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	got := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		got <- result{conn, err}
	}()
	// On an early return, a connection accepted at that moment is closed.
	taken := false
	defer func() {
		if !taken {
			go func() {
				if r := <-got; r.conn != nil {
					r.conn.Close()
				}
			}()
		}
	}()
	wait := time.NewTimer(connectWait)
	defer wait.Stop()
	select {
	case r := <-got:
		taken = true
		if r.err != nil {
			return nil, fmt.Errorf("%w: handoff pipe: %v", ErrRefused, r.err)
		}
		pid, err := winpipe.ClientPID(r.conn)
		if err != nil || int(pid) != c.PID {
			r.conn.Close()
			return nil, fmt.Errorf("%w: handoff pipe client is pid %d, not the new generation (pid %d): %v", ErrRefused, pid, c.PID, err)
		}
		return r.conn, nil
	case <-c.exited:
		return nil, ErrChildExited
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, fmt.Errorf("%w while waiting for pid %d to connect; it was killed", ErrCanceled, c.PID)
		}
		return nil, fmt.Errorf("%w (pid %d never connected to its handoff pipe: not a baton program?): %w", ErrReadyTimeout, c.PID, ctx.Err())
	case <-wait.C:
		return nil, fmt.Errorf("%w (pid %d did not connect to its handoff pipe within %v)", ErrReadyTimeout, c.PID, connectWait)
	}
}

// duplicateInto copies handle h into process pid and returns its value
// there.
func duplicateInto(h windows.Handle, pid int) (windows.Handle, error) {
	p, err := windows.OpenProcess(windows.PROCESS_DUP_HANDLE, false, uint32(pid))
	if err != nil {
		return 0, err
	}
	defer windows.CloseHandle(p)
	var out windows.Handle
	err = windows.DuplicateHandle(windows.CurrentProcess(), h, p, &out, 0, false, windows.DUPLICATE_SAME_ACCESS)
	return out, err
}

// startupJob is a job object that kills the new generation if the parent
// disappears before the handover (closing the last handle of a job with
// KILL_ON_JOB_CLOSE terminates its processes).
type startupJob struct {
	mu sync.Mutex // release and close run on different goroutines
	h  windows.Handle
}

func newStartupJob() (*startupJob, error) {
	h, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return &startupJob{}, err
	}
	j := &startupJob{h: h}
	if err := j.setLimits(windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | windows.JOB_OBJECT_LIMIT_BREAKAWAY_OK); err != nil {
		j.close()
		return &startupJob{}, err
	}
	return j, nil
}

func (j *startupJob) setLimits(flags uint32) error {
	var info windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION
	info.BasicLimitInformation.LimitFlags = flags
	_, err := windows.SetInformationJobObject(j.h, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info)))
	return err
}

func (j *startupJob) assign(pid int) error {
	if j.h == 0 {
		return errors.New("no job object")
	}
	p, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(pid))
	if err != nil {
		return err
	}
	defer windows.CloseHandle(p)
	return windows.AssignProcessToJobObject(j.h, p)
}

// release lets the new generation outlive the job (and us): it now owns
// the sockets.
func (j *startupJob) release() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.h == 0 {
		return
	}
	if err := j.setLimits(windows.JOB_OBJECT_LIMIT_BREAKAWAY_OK); err != nil {
		// Closing the handle now would kill the new generation: keep it
		// open for as long as we live instead.
		j.h = 0
		return
	}
	windows.CloseHandle(j.h)
	j.h = 0
}

func (j *startupJob) close() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.h != 0 {
		windows.CloseHandle(j.h)
		j.h = 0
	}
}

// DupFile duplicates the socket behind sc for a child.
func DupFile(sc syscall.Conn, name string) (*os.File, error) {
	return nil, fmt.Errorf("%w: sockets are duplicated with WSADuplicateSocket on Windows", ErrUnsupported)
}

// openChannel connects to the handoff pipe a baton parent named for us.
func openChannel() (net.Conn, error) {
	path, ok := os.LookupEnv(EnvChannel)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(EnvChannel)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := winpipe.Dial(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("handoff pipe %s: %w", path, err)
	}
	return conn, nil
}

func inheritedFiles(h Handoff) ([]*os.File, stderrSwitch, error) {
	files := make([]*os.File, len(h.Files))
	for i, d := range h.Files {
		if d.Kind != KindFile {
			continue // sockets are rebuilt from d.Data by their user
		}
		if len(d.Data) != 8 {
			return nil, nil, fmt.Errorf("inherited file %q: no handle in the handoff message", d.Name)
		}
		files[i] = os.NewFile(uintptr(binary.LittleEndian.Uint64(d.Data)), d.Name)
	}
	var sw stderrSwitch
	if len(h.StderrRelay) == 2 {
		sw = relaySwitch{pipe: windows.Handle(h.StderrRelay[0]), real: windows.Handle(h.StderrRelay[1])}
	}
	return files, sw, nil
}

// relaySwitch takes over from the parent: Windows has no dup2, so the
// stderr handle that code already holds (os.Stderr, loggers made from it)
// stays the pipe, and this process now copies the pipe to the parent's real
// stderr itself, so nothing is lost when the parent exits. The runtime's
// own crash output asks GetStdHandle each time: it goes straight to the
// real stderr.
type relaySwitch struct{ pipe, real windows.Handle }

func (r relaySwitch) restore() error {
	if err := windows.SetStdHandle(windows.STD_ERROR_HANDLE, r.real); err != nil {
		return err
	}
	real := os.NewFile(uintptr(r.real), "stderr")
	pipe := os.NewFile(uintptr(r.pipe), "stderr-relay")
	realStderr = real
	os.Stderr = real // code that asks from now on writes there directly
	go io.Copy(real, pipe)
	return nil
}

func guardStderrPipe() (undo func()) { return func() {} }
