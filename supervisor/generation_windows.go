package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/lifecycle"
)

// generation is one run of the app: a lifecycle.Proc for the engine. On
// Windows the supervisor is the generation's handoff parent: the app (a
// baton library program) gets the sockets, the state blob and the named
// files through the handoff, says ready through it, and later answers the
// supervisor's link (state for the next generation, drain).
type generation struct {
	genCommon

	child  *handoff.Child
	exited <-chan struct{}
}

// startGeneration starts generation n of the app as a handoff child with
// the service's sockets, and the state and named files of handed (closed
// in any case).
func (s *Supervisor) startGeneration(ctx context.Context, n int, from *generation, handed *handoff.Handed, wantSHA string) (_ *generation, err error) {
	defer handed.Close()
	app, err := exec.LookPath(s.cfg.Command[0])
	if errors.Is(err, exec.ErrDot) {
		// `baton run -- app.exe` names the app in the current directory on
		// purpose, as cmd.exe would find it.
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", contract.ErrBinary, s.cfg.Command[0], err)
	}
	if app, err = filepath.Abs(app); err != nil {
		return nil, fmt.Errorf("%w: %v", contract.ErrBinary, err)
	}
	g := &generation{genCommon: genCommon{s: s, n: n, binary: app}}
	// Keep a copy of what this generation runs, so that a rollback can run
	// it again whatever happens to the installed file meanwhile (and so
	// that the installed .exe is never the running image: it can be
	// replaced). It must end in .exe for CreateProcess.
	g.saved = filepath.Join(s.runDir, fmt.Sprintf("%s.gen%d.exe", s.cfg.Name, n))
	src := app
	if from != nil {
		src = from.saved
		g.binary = from.binary
	}
	if err := saveCopy(src, g.saved); err != nil {
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
	linkLn, linkPath, err := handoff.ListenLink(fmt.Sprintf("%s.gen%d", s.cfg.Name, n))
	if err != nil {
		return nil, fmt.Errorf("link for generation %d: %w", n, err)
	}
	items := s.host.items()
	var state []byte
	if handed != nil {
		items = append(items, handed.Items...)
		state = handed.State
	}
	env := append(os.Environ(),
		contract.EnvLink+"="+linkPath,
		contract.EnvSupervisor+"="+s.cfg.Name,
		contract.EnvGeneration+"="+strconv.Itoa(n),
	)
	out := &taggedOutput{g: g}
	defer func() {
		if err != nil {
			// What it wrote before it failed: with its pid when it ran.
			var ee *contract.ExitError
			pid := 0
			if errors.As(err, &ee) {
				pid = ee.PID
			}
			out.setPID(pid)
		}
	}()
	// Bounded like the readiness that follows, and ended by a stop.
	sctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	child, err := handoff.Spawn(sctx, handoff.SpawnConfig{
		Binary:     g.saved,
		Args:       s.cfg.Command[1:],
		Env:        childEnv(env),
		Items:      items,
		Message:    handoff.Handoff{Generation: n, Parent: handoff.Self(), Binary: g.binary},
		State:      state,
		Logger:     s.log,
		Supervised: true,
		Stdout:     out,
		Stderr:     out,
	})
	if err != nil {
		linkLn.Close()
		return nil, err
	}
	g.mu.Lock()
	g.child, g.pid, g.exited, g.started = child, child.PID, child.Exited(), time.Now()
	g.mu.Unlock()
	out.setPID(child.PID)
	// The link carries no state here (the handoff did): it is for the
	// next upgrade's state and the drain.
	go s.acceptLink(g, linkLn, nil)
	return g, nil
}

// childEnv drops what describes the supervisor's own inheritance.
func childEnv(env []string) []string {
	out := env[:0:0]
	seen := map[string]bool{}
	for i := len(env) - 1; i >= 0; i-- { // the last value of a name wins
		k, _, _ := strings.Cut(env[i], "=")
		if seen[strings.ToUpper(k)] {
			continue
		}
		seen[strings.ToUpper(k)] = true
		switch k {
		case contract.EnvHandoff, contract.EnvDrainSignal:
			continue
		}
		out = append(out, env[i])
	}
	return out
}

// taggedOutput prefixes each line of a generation's output with its
// generation and pid; the supervisor is the only writer of its log. Lines
// written before Spawn returned (the pid is known then: an app that fails
// at once writes its reason before) wait for the pid, a bounded number;
// they are never blocked (the child must not stall on its pipe).
type taggedOutput struct {
	g       *generation
	mu      sync.Mutex
	pid     int
	known   bool
	pending []string
}

const maxPendingLines = 256

func (t *taggedOutput) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\r\n")
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.known && len(t.pending) < maxPendingLines {
		t.pending = append(t.pending, line)
		return len(p), nil
	}
	t.writeLocked(line)
	return len(p), nil
}

// setPID tags what waited, and what comes, with pid (0: unknown).
func (t *taggedOutput) setPID(pid int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.known {
		return
	}
	t.pid, t.known = pid, true
	for _, l := range t.pending {
		t.writeLocked(l)
	}
	t.pending = nil
}

func (t *taggedOutput) writeLocked(line string) {
	pid := "?"
	if t.pid > 0 {
		pid = strconv.Itoa(t.pid)
	}
	t.g.s.logOut.WriteLine(fmt.Sprintf("[gen %d pid %s] %s", t.g.n, pid, line))
}

// The generation as the lifecycle engine sees it.

func (g *generation) WaitReady(ctx context.Context) (lifecycle.ReadyInfo, error) {
	reply, err := g.child.WaitReady(ctx)
	if err != nil {
		return lifecycle.ReadyInfo{}, err
	}
	g.readyAfter = time.Since(g.started)
	go g.hashBinary()
	return lifecycle.ReadyInfo{AppStartup: reply.AppStartup}, nil
}

// Commit sends the go-ahead: the generation accepts from now on.
func (g *generation) Commit() error { return g.child.Ack(false, false) }

func (g *generation) Abort(reason string) { g.child.Abort(reason) }

// Drain asks g over its link to stop accepting and finish (Exit in the
// app). Windows has no drain signal for a console child: without a link
// the engine kills it at the drain deadline.
func (g *generation) Drain() {
	select {
	case <-g.exited:
		return
	default:
	}
	link := g.getLink()
	if link == nil {
		g.s.log.Warn("generation has no link to be told to drain; it is killed at the drain deadline", "gen", g.n, "pid", g.pid)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := link.Drain(ctx); err != nil {
		g.s.log.Warn("drain request over the link failed; the generation is killed at the drain deadline", "gen", g.n, "pid", g.pid, "err", err)
		return
	}
	go g.s.relayConns(g) // its idle client connections go to the serving generation
}

func (g *generation) Kill() { _ = g.child.Kill() }

func (g *generation) Exited() <-chan struct{} { return g.exited }

func (g *generation) Err() error {
	if e := g.child.ExitErr(); e != nil {
		return e
	}
	return nil
}

// Release removes g's saved copy once its process is gone: a running
// image cannot be deleted on Windows (Wine enforces the same lock), and a
// draining generation is released while it still runs. Copies left by a
// supervisor that was killed are swept at the next start (openHost).
func (g *generation) Release() {
	if g.saved == "" {
		return
	}
	remove := func() {
		// The image stays locked for a moment after the process is
		// signalled as exited.
		for i := 0; i < 20; i++ {
			err := os.Remove(g.saved)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		g.s.log.Debug("saved copy of an ended generation not removed; swept at the next start", "gen", g.n, "path", g.saved)
	}
	select {
	case <-g.exited:
		remove()
	default:
		go func() {
			<-g.exited
			remove()
		}()
	}
}

// saveCopy keeps what a generation runs at dst as a copy of src. Not a
// hard link (saveBinary's way on Unix): on Windows the lock on a running
// image covers every link of the file, so a linked copy would lock the
// installed .exe too: it could be neither overwritten nor replaced by a
// rename, and a stale copy could not be deleted while another link runs.
func saveCopy(src, dst string) error {
	if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("a stale copy is in the way: %w", err)
	}
	return copyBinary(src, dst)
}
