//go:build unix

package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-go/baton"
	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/release"
)

// Generation states, as reported by status.
const (
	stateStarting = "starting"
	stateServing  = "serving"
	stateDraining = "draining"
)

// generation is one run of the app.
type generation struct {
	n          int
	pid        int
	binary     string // the installed path it was started from
	saved      string // the copy it runs (kept for a rollback)
	sha256     string // of the saved copy; computed after the start (guarded by mu)
	started    time.Time
	readyAfter time.Duration

	mu    sync.Mutex
	state string

	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr *baton.ChildExitError
	ready   chan struct{} // closed on READY=1 from its notify socket
	notify  *net.UnixConn
	probe   *probeSocket      // http/tcp readiness: a socket only this generation holds
	link    *handoff.LinkConn // library apps: state, named files and drain (guarded by mu)
	tail    *handoff.Tail
	out     sync.WaitGroup // the output copiers
}

func (g *generation) setState(s string) {
	g.mu.Lock()
	g.state = s
	g.mu.Unlock()
}

func (g *generation) binarySHA256() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sha256
}

func (g *generation) getState() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state
}

// startGeneration starts generation n of the app with the sockets as
// LISTEN_FDS (fd 3 onwards), through the activator so that LISTEN_PID is
// the app's own pid. A library app also gets handed (state and named
// files of the previous generation) over its supervisor link; handed is
// closed in any case.
func (s *Supervisor) startGeneration(n int, from *generation, handed *handoff.Handed) (_ *generation, err error) {
	defer func() {
		if err != nil {
			handed.Close()
		}
	}()
	app, err := exec.LookPath(s.cfg.Command[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", baton.ErrBinary, s.cfg.Command[0], err)
	}
	if app, err = filepath.Abs(app); err != nil {
		return nil, fmt.Errorf("%w: %v", baton.ErrBinary, err)
	}
	g := &generation{n: n, binary: app, state: stateStarting, exited: make(chan struct{}), ready: make(chan struct{}),
		tail: handoff.NewTail(2048)}
	// Keep a copy of what this generation runs, so that a rollback can run
	// it again whatever happens to the installed file meanwhile.
	g.saved = filepath.Join(s.runDir, fmt.Sprintf("%s.gen%d.bin", s.cfg.Name, n))
	src := app
	if from != nil {
		src = from.saved // a rollback runs the previous generation's binary
		g.binary = from.binary
	}
	if err := saveBinary(src, g.saved); err != nil {
		return nil, fmt.Errorf("%w: keeping a copy of %s for rollbacks: %v", baton.ErrBinary, src, err)
	}
	defer func() {
		if err != nil {
			os.Remove(g.saved)
		}
	}()
	exe := g.saved

	notifyPath := filepath.Join(s.runDir, fmt.Sprintf("%s.gen%d.notify", s.cfg.Name, n))
	os.Remove(notifyPath)
	g.notify, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket for generation %d: %w", n, err)
	}
	os.Chmod(notifyPath, 0o600)
	linkPath := filepath.Join(s.runDir, fmt.Sprintf("%s.gen%d.link", s.cfg.Name, n))
	os.Remove(linkPath)
	linkLn, err := net.ListenUnix("unix", &net.UnixAddr{Name: linkPath, Net: "unix"})
	if err != nil {
		g.closeNotify()
		return nil, fmt.Errorf("link socket for generation %d: %w", n, err)
	}
	os.Chmod(linkPath, 0o600)
	defer func() {
		if err != nil {
			linkLn.Close()
		}
	}()

	files, names := s.files, s.fdNames
	if s.cfg.Readiness.Mode == "http" || s.cfg.Readiness.Mode == "tcp" {
		// All generations share the sockets, so a probe through them may be
		// answered by the old one: probe through a socket of its own.
		if g.probe, err = newProbeSocket(); err != nil {
			g.closeNotify()
			return nil, err
		}
		files = append(append([]*os.File(nil), files...), g.probe.file)
		names = append(append([]string(nil), names...), probeFDName)
	}

	// The activator execs the saved copy with argv[0] = the installed path,
	// which is what the app (and ps) should see.
	args := append(append(append([]string{}, s.cfg.Activator[1:]...), "--", exe, g.binary), s.cfg.Command[1:]...)
	cmd := exec.Command(s.cfg.Activator[0], args...)
	cmd.Env = append(childEnv(os.Environ()),
		"LISTEN_FDS="+strconv.Itoa(len(files)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"),
		"NOTIFY_SOCKET="+notifyPath,
		handoff.EnvLink+"="+linkPath,
		"BATON_DRAIN_SIGNAL="+strconv.Itoa(int(s.cfg.DrainSignal)),
		"BATON_SUPERVISOR="+s.cfg.Name,
		"BATON_GENERATION="+strconv.Itoa(n),
	)
	cmd.ExtraFiles = files
	cmd.SysProcAttr = childProcAttr(s.cfg.OrphanGuard)
	// Our own pipes, not StdoutPipe: exec.Cmd.Wait would close them as soon
	// as the process exits, dropping its last lines (a panic, say).
	stdout, stdoutW, err := os.Pipe()
	if err != nil {
		g.closeNotify()
		return nil, err
	}
	stderr, stderrW, err := os.Pipe()
	if err != nil {
		stdout.Close()
		stdoutW.Close()
		g.closeNotify()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = stdoutW, stderrW
	g.cmd = cmd
	err = s.spawn(cmd)
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		stdout.Close()
		stderr.Close()
		g.closeNotify()
		os.Remove(g.saved)
		return nil, fmt.Errorf("%w: starting %s: %v", baton.ErrBinary, app, err)
	}
	g.pid = cmd.Process.Pid
	g.started = time.Now()
	s.watchdog.add(g.pid) // its process group id (Setpgid)
	g.out.Add(2)
	go s.copyOutput(g, stdout)
	go s.copyOutput(g, stderr)
	go g.readNotify()
	go s.acceptLink(g, linkLn, handed)
	go func() {
		err := cmd.Wait()
		// Its process group goes with it: children it left behind would
		// keep the service's sockets (and accept nobody).
		syscall.Kill(-g.pid, syscall.SIGKILL)
		// Let the copiers drain what the process wrote last (bounded: a
		// grandchild could keep a pipe open).
		copied := make(chan struct{})
		go func() { g.out.Wait(); close(copied) }()
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
		e := &baton.ChildExitError{PID: g.pid, ExitCode: -1, StderrTail: g.tail.String()}
		if cmd.ProcessState != nil {
			e.ExitCode = cmd.ProcessState.ExitCode()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				e.Signal = ws.Signal().String()
			}
		} else if err != nil {
			e.StderrTail = err.Error()
		}
		g.exitErr = e
		g.closeNotify()
		s.watchdog.remove(g.pid)
		close(g.exited)
	}()
	return g, nil
}

// childEnv drops what describes the supervisor's own inheritance.
func childEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", handoff.EnvChannel, handoff.EnvLink, "BATON_DRAIN_SIGNAL", "BATON_SUPERVISOR", "BATON_GENERATION", "WATCHDOG_USEC", "WATCHDOG_PID":
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (g *generation) closeNotify() {
	if g.probe != nil {
		g.probe.close()
	}
	if g.notify != nil {
		path := g.notify.LocalAddr().String()
		g.notify.Close()
		os.Remove(path)
	}
}

// readNotify turns the generation's sd_notify messages into readiness.
func (g *generation) readNotify() {
	buf := make([]byte, 4096)
	readyOnce := sync.Once{}
	for {
		n, err := g.notify.Read(buf)
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if line == "READY=1" {
				readyOnce.Do(func() { close(g.ready) })
			}
		}
	}
}

// copyOutput tags each line of the app's output with its generation and
// pid; the supervisor is the only writer of its log.
func (s *Supervisor) copyOutput(g *generation, r *os.File) {
	defer g.out.Done()
	defer r.Close()
	br := bufio.NewReaderSize(r, 64<<10)
	prefix := fmt.Sprintf("[gen %d pid %d] ", g.n, g.pid)
	for {
		// ReadSlice, not a Scanner: a line longer than the buffer is
		// passed on in pieces instead of stopping the copy (which would
		// leave the app blocked on a full pipe).
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			line := strings.TrimRight(string(chunk), "\n")
			g.tail.Write([]byte(line + "\n"))
			s.logOut.WriteLine(prefix + line)
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

// waitReady waits until g is ready by the configured means, exits, or the
// timeout passes.
func (s *Supervisor) waitReady(ctx context.Context, g *generation) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	probe := make(chan struct{})
	r := s.cfg.Readiness
	switch r.Mode {
	case "notify":
		probe = g.ready
	case "delay":
		go func() {
			select {
			case <-time.After(r.Delay):
				close(probe)
			case <-ctx.Done():
			}
		}()
	case "http":
		go pollUntil(ctx, probe, func() bool { return httpOK(ctx, r.URL, g.probe.addr) })
	case "tcp":
		go pollUntil(ctx, probe, func() bool { return g.probe.accepted(ctx) })
	}
	select {
	case <-probe:
		// A probe may succeed thanks to the old generation (same sockets):
		// the new one must still be alive to count as ready.
		select {
		case <-g.exited:
			return g.exitErr
		default:
		}
		g.readyAfter = time.Since(g.started)
		if g.probe != nil {
			g.probe.close() // the generation keeps its own copy
		}
		return nil
	case <-g.exited:
		return g.exitErr
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return fmt.Errorf("%w: waiting for pid %d", baton.ErrCanceled, g.pid)
		}
		return fmt.Errorf("%w (pid %d, %s readiness, %v)", baton.ErrReadyTimeout, g.pid, r.Mode, s.cfg.ReadyTimeout)
	}
}

func pollUntil(ctx context.Context, done chan struct{}, ok func() bool) {
	for {
		if ok() {
			close(done)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

var probeClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// httpOK asks rawURL's path from the generation's probe socket at addr
// (the Host header stays the one of rawURL).
func httpOK(ctx context.Context, rawURL, addr string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return false
	}
	req.URL.Host = addr
	req.URL.Scheme = "http"
	resp, err := probeClient.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}

// drain asks g to drain (a library app through its link: its Exit
// channel; any other with the drain signal) and kills it (its whole process
// group) at the deadline. It returns when g is gone.
func (s *Supervisor) drain(g *generation) {
	g.setState(stateDraining)
	select {
	case <-g.exited:
		return // nothing left to drain
	default:
	}
	told := false
	if link := g.getLink(); link != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := link.Drain(ctx)
		cancel()
		if told = err == nil; !told {
			s.log.Warn("drain request over the link failed; sending the drain signal", "gen", g.n, "pid", g.pid, "err", err)
		}
	}
	if !told {
		if err := g.cmd.Process.Signal(s.cfg.DrainSignal); err != nil {
			s.log.Warn("drain signal not delivered", "gen", g.n, "pid", g.pid, "err", err)
		}
	}
	select {
	case <-g.exited:
	case <-time.After(s.cfg.DrainTimeout):
		s.log.Warn("generation still running at the drain deadline; killing it", "gen", g.n, "pid", g.pid, "deadline", s.cfg.DrainTimeout)
		killGroup(g.pid)
		<-g.exited
	}
}

// acceptLink waits for a library app's link (as long as the generation
// runs: an app may create its Upgrader late), gives it what the previous
// generation handed over and keeps the link for later requests. handed is
// closed here: the app has its own copies.
func (s *Supervisor) acceptLink(g *generation, ln *net.UnixListener, handed *handoff.Handed) {
	defer handed.Close()
	path := ln.Addr().String()
	defer os.Remove(path)
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-g.exited:
		case <-ctx.Done():
		}
		cancel()
	}()
	link, hello, err := handoff.AcceptLink(ctx, ln)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("generation's link refused", "gen", g.n, "pid", g.pid, "err", err)
		}
		return
	}
	if hello.PID != g.pid {
		// Only the app itself (the activator execs it, same pid) links up.
		s.log.Warn("link from another process refused", "gen", g.n, "pid", g.pid, "link_pid", hello.PID)
		link.Close()
		return
	}
	if handed == nil {
		handed = &handoff.Handed{}
	}
	handed.Msg.Generation = g.n
	handed.Msg.Parent = handoff.Self()
	handed.Msg.Binary = g.binary
	if err := link.Give(handed); err != nil {
		s.log.Warn("handing over to the generation's link failed", "gen", g.n, "pid", g.pid, "err", err)
		link.Close()
		return
	}
	g.mu.Lock()
	g.link = link
	g.mu.Unlock()
	go func() {
		<-g.exited
		link.Close()
	}()
	s.log.Debug("library generation linked", "gen", g.n, "pid", g.pid, "files", len(handed.Items), "state_bytes", len(handed.State))
}

func (g *generation) getLink() *handoff.LinkConn {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.link
}

// takeHandover asks the serving generation (a library app with a link) for
// its state and named files, for the generation about to start.
func (s *Supervisor) takeHandover(ctx context.Context, g *generation) (*handoff.Handed, error) {
	if g == nil {
		return nil, nil
	}
	link := g.getLink()
	if link == nil {
		return nil, nil
	}
	select {
	case <-g.exited:
		return nil, nil
	default:
	}
	if link.Broken() {
		// An earlier exchange failed (and that upgrade with it): going on
		// without the state beats never upgrading again.
		s.log.Warn("the serving generation's link failed earlier; the next generation starts without its state", "gen", g.n, "pid", g.pid)
		return nil, nil
	}
	h, err := link.Take(ctx)
	if err != nil {
		return nil, fmt.Errorf("generation %d (pid %d) did not hand over its state: %w", g.n, g.pid, err)
	}
	return h, nil
}

// release removes g's saved binary (once no rollback can need it).
func (g *generation) release() {
	if g.saved != "" {
		os.Remove(g.saved)
	}
}

// healthAddr is the address part of a health URL (after the switch the
// probe socket is gone: probation checks go through the service's own
// socket, where only the new generation accepts now).
func healthAddr(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return u.Host
}

// kill ends g at once (a failed start) and waits for it.
func (g *generation) kill() {
	killGroup(g.pid)
	select {
	case <-g.exited:
	case <-time.After(10 * time.Second):
	}
}

func killGroup(pid int) {
	// Children run in their own process group (Setpgid): kill it whole.
	syscall.Kill(-pid, syscall.SIGKILL)
}

// saveBinary keeps what a generation runs at dst: a hard link to src when
// both are on one file system (instant, whatever the binary's size), else a
// copy. A link stays the old file when a deploy renames a new binary into
// place (as baton install, baton upgrade --binary and package managers do);
// writing into the installed file in place fails with "text file busy" as
// for any running program.
func saveBinary(src, dst string) error {
	os.Remove(dst)
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o700)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}

// hashBinary computes the sha256 of what g runs, for status. It runs once
// g is ready: hashing a large binary would add to every switch.
func (g *generation) hashBinary() {
	sum, err := release.FileSHA256(g.saved)
	if err != nil {
		return
	}
	g.mu.Lock()
	g.sha256 = sum
	g.mu.Unlock()
}
