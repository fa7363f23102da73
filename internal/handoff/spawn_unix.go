//go:build unix

package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// On Unix the child gets, through exec.Cmd.ExtraFiles:
//
//	fd 3      its end of a socketpair: the handoff channel
//	fd 4      the parent's real stderr (its own stderr is a pipe until Ready)
//	fd 5...   the items, in the order of Handoff.Files
const (
	fdChannel    = 3
	fdStderr     = 4
	fdFirstItem  = 5
	stderrFDName = "baton.stderr"
)

func checkBinary(path string) error {
	fi, err := statBinary(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return errBinary(path, errors.New("not executable (no x permission)"))
	}
	if err := unix.Access(path, unix.X_OK); err != nil {
		return errBinary(path, fmt.Errorf("not executable by this user: %v", err))
	}
	return nil
}

// Spawn starts the new generation with the items and sends it the handoff.
// On Unix it returns as soon as the process runs (ctx is used by WaitReady).
func Spawn(ctx context.Context, cfg SpawnConfig) (*Child, error) {
	if err := checkBinary(cfg.Binary); err != nil {
		return nil, err
	}
	// Not every Unix has SOCK_CLOEXEC; ForkLock keeps a concurrent fork from
	// inheriting the pair before it is marked close-on-exec.
	syscall.ForkLock.RLock()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(pair[0])
		unix.CloseOnExec(pair[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("handoff channel: %w", err)
	}
	parentEnd := os.NewFile(uintptr(pair[0]), "baton-handoff-parent")
	childEnd := os.NewFile(uintptr(pair[1]), "baton-handoff-child")
	defer childEnd.Close()
	conn, err := net.FileConn(parentEnd)
	parentEnd.Close()
	if err != nil {
		return nil, fmt.Errorf("handoff channel: %w", err)
	}

	msg := cfg.Message
	msg.Files = msg.Files[:0:0]
	extra := []*os.File{childEnd, os.Stderr}
	for _, it := range cfg.Items {
		msg.Files = append(msg.Files, it.Desc)
		extra = append(extra, it.File)
	}

	tail := NewTail(stderrTailBytes)
	cmd := exec.Command(cfg.Binary, cfg.Args...)
	if cfg.Argv0 != "" {
		cmd.Args[0] = cfg.Argv0
	}
	cmd.Env = append(cleanEnv(cfg.Env), EnvChannel+"="+strconv.Itoa(fdChannel))
	cmd.Stdout = os.Stdout
	cmd.Stderr = io.MultiWriter(os.Stderr, tail)
	cmd.ExtraFiles = extra
	// Bound the wait for the stderr pipe after the child exits, in case a
	// grandchild keeps it open.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		conn.Close()
		return nil, errBinary(cfg.Binary, err)
	}
	c := newChild(cmd, tail)
	c.watch(cmd)
	c.conn = conn
	c.start(msg, cfg.State)
	return c, nil
}

// openChannel finds the handoff channel that a baton parent gave us.
func openChannel() (net.Conn, error) {
	v, ok := os.LookupEnv(EnvChannel)
	if !ok {
		return nil, nil
	}
	// Our children must not believe they were started by a baton parent.
	os.Unsetenv(EnvChannel)
	fd, err := strconv.Atoi(v)
	if err != nil || fd != fdChannel {
		return nil, fmt.Errorf("%w: %s=%q is not a channel this binary understands", ErrVersion, EnvChannel, v)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "baton-handoff")
	defer f.Close()
	conn, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("handoff channel fd %d: %w", fd, err)
	}
	return conn, nil
}

func inheritedFiles(h Handoff) ([]*os.File, stderrSwitch, error) {
	unix.CloseOnExec(fdStderr)
	stderr := fdStderrSwitch{os.NewFile(uintptr(fdStderr), stderrFDName)}
	files := make([]*os.File, len(h.Files))
	for i, d := range h.Files {
		fd := fdFirstItem + i
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, nil, fmt.Errorf("inherited %s %s%s (fd %d) is missing: %v", d.Kind, d.Network, d.Addr+d.Name, fd, err)
		}
		unix.CloseOnExec(fd)
		files[i] = os.NewFile(uintptr(fd), string(d.Kind)+":"+d.Network+":"+d.Addr+d.Name)
	}
	return files, stderr, nil
}

// fdStderrSwitch puts the parent's real stderr (fd 4) back on fd 2.
type fdStderrSwitch struct{ real *os.File }

func (s fdStderrSwitch) restore() error {
	err := unix.Dup2(int(s.real.Fd()), 2)
	s.real.Close()
	return err
}

// guardStderrPipe makes a write to a broken stderr pipe return EPIPE
// instead of killing the process: with a channel registered for SIGPIPE the
// Go runtime does not die on it.
func guardStderrPipe() (undo func()) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGPIPE)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-c:
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(c); close(done) }
}

// DupFile duplicates the descriptor behind a socket (close-on-exec) into an
// *os.File that can be handed to a child. Unlike (*net.TCPListener).File it
// never switches the shared socket to blocking mode (os.File.Fd does that to
// files made by net), which would leave our own accept loop stuck in a
// blocking accept that Close cannot interrupt.
func DupFile(sc syscall.Conn, name string) (*os.File, error) {
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var derr error
	if err := raw.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup %s: %w", name, derr)
	}
	return os.NewFile(uintptr(nfd), name), nil
}
