//go:build unix

package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/lifecycle"
)

// generation is one run of the app: a lifecycle.Proc for the engine.
type generation struct {
	genCommon

	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr *contract.ExitError
	ready   chan struct{} // closed on READY=1 from its notify socket
	notify  *net.UnixConn
	probe   *probeSocket // http/tcp readiness: a socket only this generation holds
	tail    *handoff.Tail
	out     sync.WaitGroup // the output copiers
}

// startGeneration starts generation n of the app with the sockets as
// LISTEN_FDS (fd 3 onwards), through the activator so that LISTEN_PID is
// the app's own pid. A library app also gets handed (state and named
// files of the previous generation) over its supervisor link; handed is
// closed in any case.
func (s *Supervisor) startGeneration(ctx context.Context, n int, from *generation, handed *handoff.Handed, wantSHA string) (_ *generation, err error) {
	defer func() {
		if err != nil {
			handed.Close()
		}
	}()
	app, err := exec.LookPath(s.cfg.Command[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", contract.ErrBinary, s.cfg.Command[0], err)
	}
	if app, err = filepath.Abs(app); err != nil {
		return nil, fmt.Errorf("%w: %v", contract.ErrBinary, err)
	}
	g := &generation{genCommon: genCommon{s: s, n: n, binary: app}, exited: make(chan struct{}), ready: make(chan struct{}),
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
		return nil, fmt.Errorf("%w: keeping a copy of %s for rollbacks: %v", contract.ErrBinary, src, err)
	}
	defer func() {
		if err != nil {
			os.Remove(g.saved)
		}
	}()
	if err := checkExpected(g.saved, wantSHA); err != nil {
		return nil, err // exactly what would run
	}
	exe := g.saved

	notifyPath := filepath.Join(s.runDir, fmt.Sprintf("%s.gen%d.notify", s.cfg.Name, n))
	os.Remove(notifyPath)
	g.notify, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket for generation %d: %w", n, err)
	}
	os.Chmod(notifyPath, 0o600)
	if err := enableNotifyCreds(g.notify); err != nil {
		g.closeNotify()
		return nil, fmt.Errorf("notify socket for generation %d: asking for the senders' credentials: %w", n, err)
	}
	linkName := filepath.Join(s.runDir, fmt.Sprintf("%s.gen%d.link", s.cfg.Name, n))
	os.Remove(linkName) // a stale one from a supervisor that was killed
	linkLn, linkPath, err := handoff.ListenLink(linkName)
	if err != nil {
		g.closeNotify()
		return nil, fmt.Errorf("link socket for generation %d: %w", n, err)
	}
	defer func() {
		if err != nil {
			linkLn.Close()
		}
	}()

	files, names := s.host.files, s.host.fdNames
	appArgs := s.cfg.Command[1:]
	var proxyEnv []string
	if s.front != nil {
		// Proxy mode: sockets of its own behind the proxy, not the public ones.
		var standsFor string
		var port int
		var adopted *backendAddrs
		files, names, g.privAddrs, standsFor, port, adopted, err = s.front.privateSockets(n)
		if err != nil {
			g.closeNotify()
			return nil, err
		}
		private := files
		defer func() {
			if err != nil {
				for _, f := range private {
					f.Close()
				}
				if adopted != nil {
					s.front.giveBack(adopted) // for the next try
				}
			}
		}()
		g.privFiles = private // the proxy keeps them until g is gone (front.forget)
		if port != 0 {
			appArgs = substitutePort(appArgs, port)
		}
		if standsFor != "" {
			proxyEnv = append(proxyEnv, contract.EnvProxiedListen+"="+standsFor)
		}
	}
	ownPort := s.front != nil && len(files) == 0 // {port}: probed on the port it binds
	if (s.cfg.Readiness.Mode == "http" || s.cfg.Readiness.Mode == "tcp") && !ownPort {
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
	args := append(append(append([]string{}, s.cfg.Activator[1:]...), "--", exe, g.binary), appArgs...)
	cmd := exec.Command(s.cfg.Activator[0], args...)
	cmd.Env = append(childEnv(os.Environ()),
		contract.EnvListenFDs+"="+strconv.Itoa(len(files)),
		contract.EnvListenFDNames+"="+strings.Join(names, ":"),
		contract.EnvNotifySocket+"="+notifyPath,
		handoff.EnvLink+"="+linkPath,
		contract.EnvDrainSignal+"="+strconv.Itoa(int(s.cfg.DrainSignal)),
		contract.EnvSupervisor+"="+s.cfg.Name,
		contract.EnvGeneration+"="+strconv.Itoa(n),
	)
	cmd.Env = append(cmd.Env, proxyEnv...)
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
	err = s.host.spawner.start(cmd)
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		stdout.Close()
		stderr.Close()
		g.closeNotify()
		os.Remove(g.saved)
		return nil, fmt.Errorf("%w: starting %s: %v", contract.ErrBinary, app, err)
	}
	g.pid = cmd.Process.Pid
	g.started = time.Now()
	if s.front != nil {
		s.front.add(n, g.pid, g.privAddrs, g.privFiles)
	}
	s.host.watchdog.add(g.pid) // its process group id (Setpgid)
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
		e := &contract.ExitError{PID: g.pid, ExitCode: -1, StderrTail: g.tail.String()}
		if cmd.ProcessState != nil {
			e.ExitCode = cmd.ProcessState.ExitCode()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				e.Signal = ws.Signal().String()
			}
		} else if err != nil {
			e.StderrTail = err.Error()
		}
		g.exitErr = e
		if s.front != nil {
			s.front.exited(n)
		}
		g.closeNotify()
		s.host.watchdog.remove(g.pid)
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
		case contract.EnvListenPID, contract.EnvListenFDs, contract.EnvListenFDNames, contract.EnvNotifySocket, contract.EnvHandoff, contract.EnvLink,
			contract.EnvDrainSignal, contract.EnvSupervisor, contract.EnvGeneration, contract.EnvWatchdogUSec, contract.EnvWatchdogPID:
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
// Only the generation's own process is heard where the kernel tells who
// sent a datagram (Linux, see notify_linux.go); a message from another
// process is ignored, with a warning (at most one every 10 s).
func (g *generation) readNotify() {
	buf := make([]byte, 4096)
	oob := make([]byte, 4096)
	readyOnce := sync.Once{}
	var warned time.Time
	ignored := 0
	for {
		n, pid, err := readNotifyMsg(g.notify, buf, oob)
		if err != nil {
			return
		}
		if notifySenderKnown && pid != g.pid {
			ignored++
			if time.Since(warned) >= 10*time.Second {
				warned = time.Now()
				g.s.log.Warn("notify message from another process ignored", "gen", g.n, "pid", g.pid, "sender_pid", pid, "ignored", ignored)
				ignored = 0
			}
			continue
		}
		if parseNotify(buf[:n]).Ready {
			readyOnce.Do(func() { close(g.ready) })
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

// waitReady waits until g is ready by the configured means, exits, or ctx
// ends (the engine's ready timeout).
func (s *Supervisor) waitReady(ctx context.Context, g *generation) error {
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
		addr := g.privateAddr()
		if g.probe != nil {
			addr = g.probe.addr
		}
		go pollUntil(ctx, probe, func() bool { return httpOK(ctx, r.URL, addr) })
	case "tcp":
		if g.probe == nil { // proxy mode, {port}: the app binds it once it can serve
			go pollUntil(ctx, probe, func() bool { return dialOK(ctx, g.privateAddr()) })
			break
		}
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
			return fmt.Errorf("%w: waiting for pid %d", contract.ErrCanceled, g.pid)
		}
		return fmt.Errorf("%w (pid %d, %s readiness, %v)", contract.ErrReadyTimeout, g.pid, r.Mode, s.cfg.ReadyTimeout)
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

// The generation as the lifecycle engine sees it.

func (g *generation) WaitReady(ctx context.Context) (lifecycle.ReadyInfo, error) {
	if err := g.s.waitReady(ctx, g); err != nil {
		return lifecycle.ReadyInfo{}, err
	}
	go g.hashBinary() // for status; after the switch, not in its way
	return lifecycle.ReadyInfo{}, nil
}

// Commit: the sockets are shared already; nothing to hand over. In proxy
// mode it is the switch of weights (or the whole canary).
func (g *generation) Commit() error {
	if g.s.front == nil {
		return nil
	}
	return g.s.front.commit(g)
}

// Abort kills a generation that did not take over; a canary that took
// traffic (proxy mode) is out of the proxy already and drains first, so
// that its clients' connections end cleanly.
func (g *generation) Abort(string) {
	if g.tookTraffic.Load() {
		g.Drain()
		select {
		case <-g.exited:
			return
		case <-time.After(g.s.cfg.DrainTimeout / 2): // the other half went to its requests (retire)
		}
	}
	g.kill()
}

// Drain asks g to drain: a library app through its link (its Exit
// channel), any other with the drain signal.
func (g *generation) Drain() {
	s := g.s
	select {
	case <-g.exited:
		return // nothing left to drain
	default:
	}
	if s.front != nil && !g.retired.Load() {
		s.front.retire(g)
	}
	if link := g.getLink(); link != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := link.Drain(ctx)
		cancel()
		if err == nil {
			if s.front == nil || s.front.mode == ProxyTCP {
				go s.relayConns(g) // its idle client connections go to the serving generation
			}
			return
		}
		s.log.Warn("drain request over the link failed; sending the drain signal", "gen", g.n, "pid", g.pid, "err", err)
	}
	if err := g.cmd.Process.Signal(s.cfg.DrainSignal); err != nil {
		s.log.Warn("drain signal not delivered", "gen", g.n, "pid", g.pid, "err", err)
	}
}

// Kill ends g's whole process group at once.
func (g *generation) Kill() { killGroup(g.pid) }

func (g *generation) Exited() <-chan struct{} { return g.exited }

func (g *generation) Err() error {
	select {
	case <-g.exited:
	default:
		return nil
	}
	if g.exitErr == nil {
		return nil
	}
	return g.exitErr
}

func (g *generation) Release() { g.release() }

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
