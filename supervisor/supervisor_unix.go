//go:build unix

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/baton-go/baton"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/sdnotify"
	"github.com/baton-go/baton/internal/sockstat"
	"github.com/baton-go/baton/internal/unixsock"
	"github.com/coreos/go-systemd/v22/daemon"
)

// ErrGaveUp: the app kept failing to start or crashing.
var ErrGaveUp = errors.New("the app keeps failing; giving up")

// Supervisor runs generations of one app on sockets it owns.
type Supervisor struct {
	cfg      Config
	log      *slog.Logger
	logOut   *lineWriter
	runDir   string
	files    []*os.File // the sockets, fd 3.. in the children
	fdNames  []string
	spawner  *spawner
	watchdog *watchdog // nil with GuardPdeathsig
	started  time.Time

	upgradeMu sync.Mutex // one upgrade (or restart) at a time

	mu        sync.Mutex
	current   *generation
	previous  *generation // the one current replaced: what a rollback runs again
	draining  []*generation
	nextGen   int
	last      *baton.UpgradeOutcome
	restarts  int    // generations started to replace a dead one
	crashes   int    // consecutive crashes of generations that did not stay up StableAfter
	failedSHA string // what the last generation that failed to get ready ran (managed binaries); guarded by mu
	phase     string
	stopping  bool

	runCtx   context.Context // cancelled by a stop request
	stopReq  chan struct{}
	stopOnce sync.Once
	stopErr  error
	changed  chan struct{} // closed and replaced when current changes
	wg       sync.WaitGroup
}

// Run supervises the app until ctx ends, `baton stop` is asked, SIGTERM or
// SIGINT arrive (all drain every generation and return nil), or the app
// keeps failing (ErrGaveUp).
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.LogFile != "" {
		rf, err := openRotating(cfg.LogFile, cfg.LogMaxSize, cfg.LogKeep)
		if err != nil {
			return err
		}
		defer rf.Close()
		out = rf
	}
	s := &Supervisor{cfg: cfg, log: cfg.Logger, logOut: newLineWriter(out), spawner: newSpawner(),
		started: time.Now(), phase: baton.PhaseStarting, stopReq: make(chan struct{}), changed: make(chan struct{})}
	if cfg.OrphanGuard == GuardWatchdog {
		w, err := startWatchdog(cfg.Activator)
		if err != nil {
			return err
		}
		s.watchdog = w
		defer w.close()
	}
	s.runDir = ctl.Dir()
	if err := os.MkdirAll(s.runDir, 0o700); err != nil {
		return err
	}
	ln, err := ctl.Listen(cfg.Name)
	if err != nil {
		return err
	}
	defer ctl.Remove(cfg.Name)
	if err := s.bind(); err != nil {
		ln.Close()
		return err
	}
	defer s.closeSockets()

	// Everything that waits (starts, readiness, probation, back-off) runs
	// under runCtx: a stop request (signal, baton stop, ctx) cancels it, so
	// a stop is never stuck behind an upgrade or a restart.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.runCtx = runCtx
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	go func() {
		for {
			select {
			case <-runCtx.Done():
				return
			case sig := <-sigs:
				if sig != syscall.SIGHUP {
					s.log.Info("stopping", "signal", sig.String())
					s.requestStop(nil)
					return
				}
				go s.upgradeBySignal(runCtx)
			}
		}
	}()
	go func() {
		<-s.stopReq
		cancel()
	}()

	// The first generation, with the crash back-off if it fails.
	if err := s.restart(runCtx, "start", 0, nil); err != nil {
		ln.Close()
		s.stop()
		if s.stopRequested() {
			return s.stopErr
		}
		return err
	}
	srv := ctl.Serve(ln, s.handle, s.log)
	defer srv.Close()
	daemon.SdNotify(false, fmt.Sprintf("READY=1\nSTATUS=%s", s.statusLine()))
	if cfg.WatchBinary {
		go s.watchBinary(runCtx)
	}
	for {
		cur, changed := s.currentAndChanged()
		var exited <-chan struct{}
		if cur != nil {
			exited = cur.exited
		}
		select {
		case <-runCtx.Done():
			s.stop()
			return s.stopErr
		case <-changed:
			continue // an upgrade or rollback switched generations: watch the new one
		case <-exited:
			if s.isStopping() || s.currentGen() != cur {
				continue
			}
			// A generation that stayed up StableAfter starts a new crash
			// episode; one that crashed sooner adds to the back-off.
			if time.Since(cur.started) >= s.cfg.StableAfter {
				s.crashes = 0
			}
			s.crashes++
			s.mu.Lock()
			s.phase = PhaseRestarting
			s.mu.Unlock()
			if s.crashes > s.cfg.MaxRestarts {
				err := fmt.Errorf("%w: generation %d crashed %d times in a row, each within %v; last: %v", ErrGaveUp, cur.n, s.crashes, s.cfg.StableAfter, cur.exitErr.Brief())
				if s.cfg.MaxRestarts < 0 {
					err = fmt.Errorf("%w: generation %d (pid %d) died (%v) and restarts are off", ErrGaveUp, cur.n, cur.pid, cur.exitErr.Brief())
				}
				s.log.Error("the serving generation died; not restarting it", "gen", cur.n, "pid", cur.pid, "exit", cur.exitErr.Brief(), "crashes_in_a_row", s.crashes)
				s.stop()
				return err
			}
			s.log.Error("the serving generation died; restarting it", "gen", cur.n, "pid", cur.pid, "exit", cur.exitErr.Brief(), "crashes_in_a_row", s.crashes)
			if err := s.restart(runCtx, "crash", s.crashes, cur); err != nil {
				s.stop()
				if s.stopRequested() {
					return s.stopErr // a stop while restarting is a stop, not a give-up
				}
				return err
			}
		}
	}
}

// requestStop asks Run to drain everything and return err (nil: exit 0).
func (s *Supervisor) requestStop(err error) {
	s.stopOnce.Do(func() {
		s.stopErr = err
		close(s.stopReq)
	})
}

func (s *Supervisor) stopRequested() bool {
	select {
	case <-s.stopReq:
		return true
	default:
		return false
	}
}

// upgradeBySignal runs an upgrade for SIGHUP. Under Type=notify-reload
// systemd waits for RELOADING=1 then READY=1 after its reload signal: a
// refused upgrade still answers, or `systemctl reload` would hang.
func (s *Supervisor) upgradeBySignal(ctx context.Context) {
	_, err := s.Upgrade(ctx)
	if err == nil {
		return
	}
	s.log.Error("upgrade by SIGHUP failed; "+s.afterFailedUpgrade(), "err", err)
	if errors.Is(err, baton.ErrUpgradeInProgress) || errors.Is(err, baton.ErrTooManyDraining) || errors.Is(err, baton.ErrStopped) {
		sdnotify.Reloading("upgrade refused")
		daemon.SdNotify(false, "READY=1\nSTATUS="+s.statusLine())
	}
}

// currentAndChanged returns the serving generation and a channel closed
// when it is replaced.
func (s *Supervisor) currentAndChanged() (*generation, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current, s.changed
}

// setCurrent makes g the serving generation (s.mu held).
func (s *Supervisor) setCurrentLocked(g *generation) {
	s.current = g
	close(s.changed)
	s.changed = make(chan struct{})
}

// watchBinary upgrades when the app's binary changes on disk (opt-in): a
// new file (or new contents) that stays the same for one more poll.
func (s *Supervisor) watchBinary(ctx context.Context) {
	fingerprint := func() string {
		p, err := exec.LookPath(s.cfg.Command[0])
		if err != nil {
			return ""
		}
		fi, err := os.Stat(p)
		if err != nil {
			return ""
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		var ino uint64
		if st != nil {
			ino = uint64(st.Ino)
		}
		return fmt.Sprintf("%d/%d/%d", ino, fi.Size(), fi.ModTime().UnixNano())
	}
	seen := fingerprint()
	var pending string
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if s.isStopping() {
			return
		}
		now := fingerprint()
		switch {
		case now == "" || now == seen:
			pending = ""
		case now != pending:
			pending = now // changed: wait until it stays put (a copy may be under way)
		default:
			seen, pending = now, ""
			s.log.Info("binary changed on disk; upgrading", "binary", s.cfg.Command[0])
			if _, err := s.Upgrade(ctx); err != nil {
				s.log.Error("upgrade after a binary change failed; "+s.afterFailedUpgrade(), "err", err)
			}
		}
	}
}

// bind opens the sockets the supervisor owns for its whole life.
func (s *Supervisor) bind() error {
	for _, l := range s.cfg.Listen {
		var f *os.File
		switch l.Network {
		case "tcp", "tcp4", "tcp6", "unix":
			if l.Network == "unix" {
				unixsock.RemoveStale(l.Addr)
			}
			ln, err := net.Listen(l.Network, l.Addr)
			if err != nil {
				return fmt.Errorf("--listen %s: %w", l, err)
			}
			if ul, ok := ln.(*net.UnixListener); ok {
				ul.SetUnlinkOnClose(false)
			}
			// DupFile, not File: File's *os.File switches the shared socket
			// to blocking mode when exec asks for its descriptor, which
			// would leave a serving generation stuck in accept().
			f, err = handoff.DupFile(ln.(syscall.Conn), l.String())
			ln.Close()
			if err != nil {
				return err
			}
		default:
			if l.Network == "unixgram" {
				unixsock.RemoveStale(l.Addr)
			}
			pc, err := net.ListenPacket(l.Network, l.Addr)
			if err != nil {
				return fmt.Errorf("--listen %s: %w", l, err)
			}
			f, err = handoff.DupFile(pc.(syscall.Conn), l.String())
			pc.Close()
			if err != nil {
				return err
			}
		}
		s.files = append(s.files, f)
		s.fdNames = append(s.fdNames, l.Name)
	}
	return nil
}

func (s *Supervisor) closeSockets() {
	for _, f := range s.files {
		f.Close()
	}
	for _, l := range s.cfg.Listen {
		if l.Network == "unix" || l.Network == "unixgram" {
			os.Remove(l.Addr)
		}
	}
}

func (s *Supervisor) spawn(cmd *exec.Cmd) error { return s.spawner.start(cmd) }

func (s *Supervisor) currentGen() *generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

func (s *Supervisor) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// restart starts a generation to replace a dead (or absent) one, with
// exponential back-off; the sockets stay open meanwhile, so clients wait in
// the accept queue. It gives up after MaxRestarts consecutive failures.
func (s *Supervisor) restart(ctx context.Context, why string, crashes int, dead *generation) error {
	s.upgradeMu.Lock()
	defer s.upgradeMu.Unlock()
	if s.currentGen() != dead {
		// Replaced meanwhile (a rollback during probation).
		s.mu.Lock()
		s.phase = baton.PhaseServing
		s.mu.Unlock()
		return nil
	}
	delay := s.cfg.RestartMin
	for i := 1; i < crashes; i++ {
		delay = min(2*delay, s.cfg.RestartMax)
	}
	for failures := 0; ; {
		if crashes > 0 || failures > 0 {
			s.mu.Lock()
			s.restarts++
			s.mu.Unlock()
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return ctx.Err()
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			delay = min(2*delay, s.cfg.RestartMax)
		}
		// A crashed generation is replaced by the same binary it ran (after a
		// rollback the installed file may be the rejected release).
		g, err := s.newGeneration(ctx, dead, nil)
		if err == nil {
			s.mu.Lock()
			if dead != nil && dead != s.previous {
				dead.release()
			}
			s.setCurrentLocked(g)
			s.phase = baton.PhaseServing
			s.mu.Unlock()
			g.setState(stateServing)
			s.log.Info("generation serving", "gen", g.n, "pid", g.pid, "ready_after", g.readyAfter.Round(time.Millisecond), "why", why)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failures++
		s.log.Error("generation failed to start", "why", why, "failures", failures, "err", err)
		if failures >= s.cfg.MaxRestarts {
			return fmt.Errorf("%w: %d failed starts in a row; last: %v", ErrGaveUp, failures, err)
		}
		why = "retry"
	}
}

// newGeneration starts the next generation and waits until it is ready;
// on failure it is killed.
func (s *Supervisor) newGeneration(ctx context.Context, from *generation, handed *handoff.Handed) (*generation, error) {
	s.mu.Lock()
	s.nextGen++
	n := s.nextGen
	s.mu.Unlock()
	g, err := s.startGeneration(n, from, handed)
	if err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx, g); err != nil {
		g.kill()
		failed := ranSHA256(g) // before its saved copy goes
		s.mu.Lock()
		s.failedSHA = failed
		s.mu.Unlock()
		g.release()
		return nil, err
	}
	go g.hashBinary()
	return g, nil
}

// Upgrade starts a new generation on the same sockets, waits until it is
// ready, then drains the old one. On failure the new one is killed and the
// current one keeps serving.
func (s *Supervisor) Upgrade(ctx context.Context) (baton.UpgradeResult, error) {
	if !s.upgradeMu.TryLock() {
		return baton.UpgradeResult{}, baton.ErrUpgradeInProgress
	}
	defer s.upgradeMu.Unlock()
	start := time.Now()
	res, err := s.upgrade(ctx, start)
	out := &baton.UpgradeOutcome{At: start, OK: err == nil}
	if err == nil {
		out.Result = &res
	} else {
		out.Error = err.Error()
		out.Code = errorCode(err)
	}
	s.mu.Lock()
	s.last = out
	s.mu.Unlock()
	return res, err
}

func (s *Supervisor) upgrade(ctx context.Context, start time.Time) (baton.UpgradeResult, error) {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return baton.UpgradeResult{}, baton.ErrStopped
	}
	s.mu.Unlock()
	if err := s.checkDraining(); err != nil {
		return baton.UpgradeResult{}, err
	}
	s.mu.Lock()
	old := s.current
	s.phase = baton.PhaseUpgrading
	s.mu.Unlock()
	sdnotify.Reloading("upgrading")
	defer func() { daemon.SdNotify(false, "READY=1\nSTATUS="+s.statusLine()) }()

	g, err := s.switchTo(ctx, old, nil)
	if err != nil {
		s.log.Error("upgrade failed; "+s.afterFailedUpgrade(), "err", err)
		if startFailed(err) {
			s.mu.Lock()
			failed := s.failedSHA
			s.mu.Unlock()
			s.restoreInstalled(s.currentGen(), failed)
		}
		return baton.UpgradeResult{}, err
	}
	res := baton.UpgradeResult{PID: g.pid, Generation: g.n, Binary: g.binary, ReadyAfter: g.readyAfter,
		Took: time.Since(start), Draining: s.drainingCount()}
	if s.cfg.Probation <= 0 || old == nil {
		return res, nil
	}
	// Probation: the new generation must stay up (and healthy) for a
	// while, else the previous binary is started again.
	if reason := s.probation(ctx, g); reason != nil {
		s.log.Error("new generation failed its probation; rolling back", "gen", g.n, "pid", g.pid, "err", reason)
		failed := ranSHA256(g)
		back, err := s.switchTo(ctx, g, old)
		if err != nil {
			return res, fmt.Errorf("%w: generation %d failed its probation (%v), and the rollback failed too: %v", ErrRolledBack, g.n, reason, err)
		}
		s.restoreInstalled(back, failed)
		return res, fmt.Errorf("%w: generation %d (pid %d) failed its probation: %w; generation %d (pid %d) runs the previous binary again",
			ErrRolledBack, g.n, g.pid, reason, back.n, back.pid)
	}
	s.log.Info("probation passed", "gen", g.n, "pid", g.pid, "probation", s.cfg.Probation)
	return res, nil
}

// startFailed reports whether an upgrade failed because the new binary was
// started and did not make it (rather than being refused before anything
// was tried: busy, too many draining, stopping, no state).
func startFailed(err error) bool {
	return errors.Is(err, baton.ErrChildExited) || errors.Is(err, baton.ErrReadyTimeout) || errors.Is(err, baton.ErrBinary)
}

// afterFailedUpgrade says what serves after a failed upgrade.
func (s *Supervisor) afterFailedUpgrade() string {
	cur := s.currentGen()
	if cur == nil {
		return "no generation serves yet"
	}
	select {
	case <-cur.exited:
		return fmt.Sprintf("the current generation (pid %d) has exited too; it is being restarted", cur.pid)
	default:
		return fmt.Sprintf("the current generation (pid %d) keeps serving", cur.pid)
	}
}

// checkDraining refuses a switch when MaxDraining old generations still
// drain.
func (s *Supervisor) checkDraining() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var live []*generation
	for _, g := range s.draining {
		select {
		case <-g.exited:
		default:
			live = append(live, g)
		}
	}
	s.draining = live
	if len(live) >= s.cfg.MaxDraining {
		return fmt.Errorf("%w: %d older generations are still draining (max %d)", baton.ErrTooManyDraining, len(live), s.cfg.MaxDraining)
	}
	return nil
}

// ErrNoPrevious: `baton rollback` without a previous generation.
var ErrNoPrevious = errors.New("no previous generation")

// ErrRolledBack: the new generation failed its probation and the previous
// binary serves again.
var ErrRolledBack = errors.New("upgrade rolled back")

// switchTo starts a generation (from the binary of prev when prev is not
// nil: a rollback), waits until it is ready, makes it current and drains
// old. On failure nothing changes.
func (s *Supervisor) switchTo(ctx context.Context, old, prev *generation) (*generation, error) {
	if s.isStopping() {
		return nil, baton.ErrStopped
	}
	// A library app hands its state and named files to the next
	// generation. An upgrade fails without them; a rollback goes on.
	takeCtx, cancelTake := ctx, context.CancelFunc(func() {})
	if prev != nil {
		// A failing generation gets a short while to hand over its state.
		takeCtx, cancelTake = context.WithTimeout(ctx, 3*time.Second)
	}
	handed, err := s.takeHandover(takeCtx, old)
	cancelTake()
	if err != nil {
		if prev == nil {
			s.mu.Lock()
			s.phase = baton.PhaseServing
			s.mu.Unlock()
			return nil, err
		}
		s.log.Warn("rolling back without the state of the failing generation", "err", err)
	}
	g, err := s.newGeneration(ctx, prev, handed)
	if err != nil && prev != nil && handed != nil && ctx.Err() == nil && !s.isStopping() {
		// The previous binary may not take the state of a newer release:
		// a rollback must not fail for it.
		s.log.Warn("the rollback generation failed with the failing generation's state; starting it again without", "err", err)
		g, err = s.newGeneration(ctx, prev, nil)
	}
	if err != nil {
		s.mu.Lock()
		s.phase = baton.PhaseServing
		s.mu.Unlock()
		return nil, err
	}
	g.setState(stateServing)
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		g.kill()
		g.release()
		return nil, baton.ErrStopped
	}
	s.setCurrentLocked(g)
	// Only the previous generation's binary copy can be needed again.
	if p := s.previous; p != nil && p != old && p != g {
		p.release()
	}
	s.previous = old
	s.phase = baton.PhaseServing
	if old != nil {
		s.draining = append(s.draining, old)
	}
	s.mu.Unlock()
	if old != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.drain(old)
		}()
	}
	s.log.Info("switched", "gen", g.n, "pid", g.pid, "ready_after", g.readyAfter.Round(time.Millisecond), "rollback", prev != nil)
	return g, nil
}

// probation watches g for Probation: it fails if g exits, or (http
// readiness) answers its health probe with errors three times in a row.
func (s *Supervisor) probation(ctx context.Context, g *generation) error {
	end := time.After(s.cfg.Probation)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	failures := 0
	for {
		select {
		case <-g.exited:
			return g.exitErr
		case <-end:
			// An exit must win over the end of probation when both are
			// ready (a health probe may have blocked meanwhile).
			select {
			case <-g.exited:
				return g.exitErr
			default:
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if s.cfg.Readiness.Mode != "http" {
				continue
			}
			if httpOK(ctx, s.cfg.Readiness.URL, healthAddr(s.cfg.Readiness.URL)) {
				failures = 0
			} else if failures++; failures >= 3 {
				return fmt.Errorf("health probe %s failed 3 times in a row", s.cfg.Readiness.URL)
			}
		}
	}
}

// Rollback starts the previous generation's binary again as a new
// generation (`baton rollback`).
func (s *Supervisor) Rollback(ctx context.Context) (baton.UpgradeResult, error) {
	if !s.upgradeMu.TryLock() {
		return baton.UpgradeResult{}, baton.ErrUpgradeInProgress
	}
	defer s.upgradeMu.Unlock()
	start := time.Now()
	if err := s.checkDraining(); err != nil {
		return baton.UpgradeResult{}, err
	}
	s.mu.Lock()
	prev, cur := s.previous, s.current
	s.mu.Unlock()
	if prev == nil {
		return baton.UpgradeResult{}, fmt.Errorf("%w: nothing to roll back to: no previous generation in this supervisor's life", ErrNoPrevious)
	}
	g, err := s.switchTo(ctx, cur, prev)
	out := &baton.UpgradeOutcome{At: start, OK: err == nil, Code: "rollback"}
	var res baton.UpgradeResult
	if err != nil {
		out.Error = err.Error()
	} else {
		res = baton.UpgradeResult{PID: g.pid, Generation: g.n, Binary: g.binary, ReadyAfter: g.readyAfter, Took: time.Since(start), Draining: s.drainingCount()}
		out.Result = &res
		s.restoreInstalled(g, "")
	}
	s.mu.Lock()
	s.last = out
	s.mu.Unlock()
	return res, err
}

func (s *Supervisor) drainingCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.draining)
}

// stop drains every generation and returns once all are gone.
func (s *Supervisor) stop() error {
	s.requestStop(nil) // cancels runCtx: an upgrade or restart under way ends
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return nil
	}
	s.stopping = true
	s.mu.Unlock()
	// Wait for the upgrade or restart under way to give up, so that the
	// snapshot below is complete (no generation started after it).
	s.upgradeMu.Lock()
	defer s.upgradeMu.Unlock()
	s.mu.Lock()
	s.phase = baton.PhaseStopped
	gens := append([]*generation(nil), s.draining...)
	if s.current != nil {
		gens = append(gens, s.current)
	}
	s.mu.Unlock()
	daemon.SdNotify(false, "STOPPING=1")
	var wg sync.WaitGroup
	for _, g := range gens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g.getState() != stateDraining {
				s.drain(g)
			} else {
				<-g.exited
			}
		}()
	}
	wg.Wait()
	s.wg.Wait()
	for _, g := range gens {
		g.release()
	}
	if s.previous != nil {
		s.previous.release()
	}
	return nil
}

// Status reports the supervisor and its generations.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Status: baton.Status{
		Name:      s.cfg.Name,
		Phase:     s.phase,
		StartedAt: s.started,
		Uptime:    time.Since(s.started),
		Draining:  []int{},
		Last:      s.last,
	}}
	for _, l := range s.cfg.Listen {
		st.Listeners = append(st.Listeners, l.Network+" "+l.Addr)
	}
	sup := &Info{PID: os.Getpid(), Restarts: s.restarts, Command: s.cfg.Command, LogFile: s.cfg.LogFile}
	gens := append([]*generation(nil), s.draining...)
	if s.current != nil {
		st.PID, st.Generation, st.Binary = s.current.pid, s.current.n, s.current.binary
		gens = append(gens, s.current)
	}
	for _, g := range gens {
		select {
		case <-g.exited:
			continue
		default:
		}
		if g != s.current {
			st.Draining = append(st.Draining, g.pid)
		}
		sup.Generations = append(sup.Generations, GenInfo{Generation: g.n, PID: g.pid, Binary: g.binary, SHA256: g.binarySHA256(),
			StartedAt: g.started, ReadyAfter: g.readyAfter, State: g.getState()})
	}
	st.Supervisor = sup
	return st
}

// statusWithConns is Status with each generation's open connections where
// the platform tells (a few ms per generation: not for sd_notify lines).
func (s *Supervisor) statusWithConns() Status {
	st := s.Status()
	var ports []int
	var paths []string
	for _, l := range s.cfg.Listen {
		switch l.Network {
		case "tcp", "tcp4", "tcp6":
			if _, p, err := net.SplitHostPort(l.Addr); err == nil {
				if n, err := strconv.Atoi(p); err == nil {
					ports = append(ports, n)
				}
			}
		case "unix":
			paths = append(paths, l.Addr)
		}
	}
	for i, g := range st.Supervisor.Generations {
		n, err := sockstat.Conns(g.PID, ports, paths)
		if err != nil {
			if !errors.Is(err, sockstat.ErrUnsupported) {
				s.log.Debug("counting connections", "pid", g.PID, "err", err)
			}
			continue
		}
		st.Supervisor.Generations[i].Conns = &n
	}
	return st
}

func (s *Supervisor) statusLine() string {
	st := s.Status()
	return fmt.Sprintf("generation %d pid %d %s", st.Generation, st.PID, st.Phase)
}

func (s *Supervisor) handle(ctx context.Context, req ctl.Request) ctl.Response {
	switch req.Op {
	case ctl.OpStatus:
		return ctl.OKResponse(s.statusWithConns())
	case ctl.OpUpgrade:
		if req.Binary != "" {
			return ctl.Response{Code: ctl.CodeBadRequest, Error: "--binary is not supported by `baton run` yet: install the new binary at " + s.cfg.Command[0] + " and run `baton upgrade`"}
		}
		res, err := s.Upgrade(mergeCtx(ctx, s.runCtx))
		return ctl.UpgradeOutcome(res, err, errorCode)
	case ctl.OpRollback:
		res, err := s.Rollback(mergeCtx(ctx, s.runCtx))
		return ctl.UpgradeOutcome(res, err, errorCode)
	case ctl.OpLogs:
		lines, next := s.logOut.Since(req.Since)
		return ctl.OKResponse(LogsResult{Lines: lines, Next: next})
	case ctl.OpStop:
		st := s.Status()
		s.requestStop(nil)
		return ctl.OKResponse(st)
	}
	return ctl.Response{Code: ctl.CodeBadRequest, Error: "unknown operation " + req.Op}
}

func errorCode(err error) string {
	switch {
	case errors.Is(err, ErrRolledBack):
		return ctl.CodeRolledBack
	case errors.Is(err, ErrNoPrevious):
		return "no_previous"
	case errors.Is(err, baton.ErrUpgradeInProgress):
		return ctl.CodeBusy
	case errors.Is(err, baton.ErrTooManyDraining):
		return ctl.CodeTooMany
	case errors.Is(err, baton.ErrStopped):
		return ctl.CodeStopped
	case errors.Is(err, baton.ErrChildExited):
		return ctl.CodeChildExited
	case errors.Is(err, baton.ErrReadyTimeout):
		return ctl.CodeReadyTimeout
	case errors.Is(err, baton.ErrBinary):
		return ctl.CodeBinary
	case errors.Is(err, baton.ErrCanceled):
		return ctl.CodeCanceled
	case errors.Is(err, handoff.ErrNoState), errors.Is(err, baton.ErrStateTooLarge), errors.Is(err, baton.ErrStateCorrupt):
		return ctl.CodeState
	case errors.Is(err, handoff.ErrLink):
		return ctl.CodeProtocol
	}
	return ctl.CodeInternal
}

// mergeCtx is a context ended by either a or b.
func mergeCtx(a, b context.Context) context.Context {
	ctx, cancel := context.WithCancel(a)
	context.AfterFunc(b, cancel)
	return ctx
}
