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
	"strconv"
	"sync"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/handlecount"
	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/lifecycle"
	"github.com/baton-go/baton/internal/observe"
	"github.com/baton-go/baton/internal/release"
	"github.com/baton-go/baton/internal/sdnotify"
	"github.com/baton-go/baton/internal/sockstat"
	"github.com/coreos/go-systemd/v22/daemon"
)

// Errors of the supervisor (see also the baton package's).
var (
	// ErrGaveUp: the app kept failing to start or crashing.
	ErrGaveUp = contract.ErrGaveUp
	// ErrNoPrevious: `baton rollback` without a previous generation.
	ErrNoPrevious = contract.ErrNoPrevious
	// ErrRolledBack: the new generation failed its probation and the
	// previous binary serves again.
	ErrRolledBack = contract.ErrRolledBack
)

// Supervisor runs generations of one app on sockets it owns. The
// lifecycle (upgrade, probation, rollback, crash restart, stop) is
// internal/lifecycle's; this package starts the app's processes for it
// (host_unix.go, host_windows.go) and answers the control endpoint.
type Supervisor struct {
	cfg     Config
	log     *slog.Logger
	logOut  *lineWriter
	runDir  string
	host    *host
	front   *front // proxy mode only
	engine  *lifecycle.Engine
	started time.Time

	mu        sync.Mutex
	failedSHA string // what the last generation that failed ran (managed binaries)
	// crashLoopSHA: what the generation that kept crashing ran, until the
	// fallback serves.
	crashLoopSHA string
	events       *observe.Recorder // nil when the events file cannot be written
	reloading    bool              // RELOADING=1 was sent for the upgrade under way
	counters     contract.Counters // for the supervisor's life (Restarts: the engine's)

	subsMu   sync.Mutex
	subs     map[int]func(events.Record)
	subsNext int

	ctlLn   net.Listener // the control endpoint, served once a generation serves
	closers []func()     // what New took, released by Run

	serving  chan struct{} // closed when the first generation serves
	servOnce sync.Once
	stopReq  chan struct{}
	halting  chan struct{} // closed when Run begins to stop, for any reason
	stopOnce sync.Once
}

// Run supervises the app until ctx ends, `baton stop` is asked, SIGTERM or
// SIGINT arrive (all drain every generation and return nil), or the app
// keeps failing (ErrGaveUp). It is New followed by Supervisor.Run.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	s, err := New(cfg, out)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// New checks cfg and takes what the supervisor owns for its whole life:
// the control endpoint, the listening sockets, the log file. Nothing is
// started yet; Run starts the app and releases all of it when it returns
// (call Run exactly once).
func New(cfg Config, out io.Writer) (_ *Supervisor, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()
	if cfg.LogFile != "" {
		rf, err := openRotating(cfg.LogFile, cfg.LogMaxSize, cfg.LogKeep)
		if err != nil {
			return nil, err
		}
		closers = append(closers, func() { rf.Close() })
		out = rf
	}
	s := &Supervisor{cfg: cfg, log: cfg.Logger, logOut: newLineWriter(out), started: time.Now(),
		serving: make(chan struct{}), stopReq: make(chan struct{}), halting: make(chan struct{})}
	s.runDir = runtimeDir()
	if err := os.MkdirAll(s.runDir, 0o700); err != nil {
		return nil, err
	}
	if s.ctlLn, err = ctl.Listen(cfg.Name); err != nil {
		return nil, err
	}
	closers = append(closers, func() { s.ctlLn.Close(); ctl.Remove(cfg.Name) })
	if s.host, err = openHost(s); err != nil {
		return nil, err
	}
	closers = append(closers, s.host.close)
	if cfg.Proxy != "" {
		lns, err := s.host.publicListeners()
		if err != nil {
			return nil, err
		}
		s.front = newFront(s, lns)
		closers = append(closers, func() {
			for _, ln := range lns {
				ln.Close()
			}
		})
	}
	s.closers = closers
	// Every lifecycle step is kept as an event record beside the control
	// endpoint (baton events, baton report); not being able to keep them
	// does not stop the service.
	if el, err := events.Open(events.Path(s.runDir, cfg.Name), cfg.Name, "supervisor", 0); err != nil {
		s.log.Warn("events are not recorded", "err", err)
	} else {
		s.events = &observe.Recorder{Log: el, Logger: s.log}
	}
	s.engine = lifecycle.New(platform{s}, lifecycle.Config{
		ReadyTimeout: cfg.ReadyTimeout,
		DrainTimeout: cfg.DrainTimeout,
		MaxDraining:  cfg.MaxDraining,
		Probation:    cfg.Probation,
		MaxRestarts:  cfg.MaxRestarts,
		RestartMin:   cfg.RestartMin,
		RestartMax:   cfg.RestartMax,
		StableAfter:  cfg.StableAfter,
		Notify:       s.notice,
		Logger:       s.log,
	})
	return s, nil
}

// Run starts the app and keeps a generation serving until ctx ends, Stop
// is called, `baton stop` is asked or SIGTERM/SIGINT arrive (each drains
// every generation; Run then returns nil), or the app keeps failing
// (ErrGaveUp). It releases everything New took.
func (s *Supervisor) Run(ctx context.Context) error {
	defer func() {
		for i := len(s.closers) - 1; i >= 0; i-- {
			s.closers[i]()
		}
	}()
	// A stop request (signal, baton stop, ctx) ends the engine's Run: the
	// operation under way is called off and every generation drains.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.stopReq:
		case <-runCtx.Done():
		}
		close(s.halting) // a canary under way is called off
		if s.front != nil {
			// Proxy mode: no new client first, and what is in progress
			// answered, while the generations still serve.
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
			s.front.shutdown(ctx)
			cancel()
		}
		cancel()
	}()
	stopSignals := s.watchSignals(runCtx)
	defer stopSignals()

	done := make(chan error, 1)
	go func() { done <- s.engine.Run(runCtx) }()
	select {
	case <-s.serving:
	case err := <-done:
		return err
	}
	if s.front != nil {
		s.front.start() // the first generation has its weight (its commit)
	}
	srv := ctl.Serve(s.ctlLn, s.handle, s.log)
	// The answers being written (`baton stop`'s, an upgrade's outcome)
	// reach their callers before the process may end: bounded, a caller
	// that does not read cannot hold the exit up.
	defer srv.CloseWait(5 * time.Second)
	daemon.SdNotify(false, fmt.Sprintf("READY=1\nSTATUS=%s", s.statusLine()))
	if s.cfg.WatchBinary {
		go s.watchBinary(runCtx)
	}
	return <-done
}

// Serving is closed once the first generation serves (a service manager
// reports the service running then).
func (s *Supervisor) Serving() <-chan struct{} { return s.serving }

// Stop asks Run to drain every generation and return; it does not wait.
func (s *Supervisor) Stop() { s.requestStop() }

// ReopenLog reopens the log file (--log-file) at its path, for a log
// rotation done by another tool (the Windows service's control code 130).
func (s *Supervisor) ReopenLog() error {
	if err := s.logOut.reopen(); err != nil {
		return fmt.Errorf("reopening the log file: %w", err)
	}
	s.log.Info("log file reopened", "path", s.cfg.LogFile)
	return nil
}

// platform is what the lifecycle engine starts generations through.
type platform struct{ s *Supervisor }

func (p platform) Start(ctx context.Context, req lifecycle.StartRequest) (lifecycle.Proc, error) {
	s := p.s
	var want string
	if req.Reason == lifecycle.ReasonUpgrade {
		// Refused before anything else (the serving generation is not even
		// asked for its state); checked again on the copy that will run.
		if want = expectedSHA256(ctx); want != "" {
			app, err := exec.LookPath(s.cfg.Command[0])
			if errors.Is(err, exec.ErrDot) {
				err = nil
			}
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", contract.ErrBinary, s.cfg.Command[0], err)
			}
			if err := checkExpected(app, want); err != nil {
				return nil, err
			}
		}
	}
	var handed *handoff.Handed
	if req.Serving != nil && !req.WithoutState {
		takeCtx, cancel := ctx, context.CancelFunc(func() {})
		if req.Reason == lifecycle.ReasonRollback {
			// A failing generation gets a short while to hand over its state.
			takeCtx, cancel = context.WithTimeout(ctx, 3*time.Second)
		}
		var err error
		handed, err = s.takeHandover(takeCtx, req.Serving.(*generation))
		cancel()
		if err != nil {
			if req.Reason != lifecycle.ReasonRollback {
				return nil, err // an upgrade without the app's state would lose it
			}
			s.log.Warn("rolling back without the state of the failing generation", "err", err)
		}
	}
	var from *generation
	if req.RunAgain != nil {
		from = req.RunAgain.(*generation)
	}
	g, err := s.startGeneration(ctx, req.N, from, handed, want)
	if err != nil {
		return nil, err
	}
	if req.Reason == lifecycle.ReasonUpgrade {
		g.canary = canaryFrom(ctx)
	}
	return g, nil
}

// checkExpected refuses a binary other than the one an upgrade request
// said it installed (ExpectSHA256): another deploy switched the file.
func checkExpected(path, want string) error {
	if want == "" {
		return nil
	}
	got, err := release.FileSHA256(path)
	if err != nil || got != want {
		return fmt.Errorf("%w: the installed binary changed since this upgrade was asked for (sha256 %.12s, want %.12s): another deploy? retry", contract.ErrBusy, got, want)
	}
	return nil
}

type expectKey struct{}

// withExpectedSHA256 carries a request's ExpectSHA256 to the start of its
// generation.
func withExpectedSHA256(ctx context.Context, sum string) context.Context {
	if sum == "" {
		return ctx
	}
	return context.WithValue(ctx, expectKey{}, sum)
}

func expectedSHA256(ctx context.Context) string {
	s, _ := ctx.Value(expectKey{}).(string)
	return s
}

// Healthy probes a generation on probation (http readiness only; other
// modes have nothing to ask, and only an exit fails them).
func (p platform) Healthy(ctx context.Context, proc lifecycle.Proc) bool {
	r := p.s.cfg.Readiness
	if r.Mode != "http" {
		return true
	}
	if g, ok := proc.(*generation); ok && p.s.front != nil && g.privateAddr() != "" {
		// Proxy mode: the generation's own socket (the public one is the
		// proxy's, which would retry a failed GET on another generation).
		return httpOK(ctx, r.URL, g.privateAddr())
	}
	// After the switch the probe socket is gone: probation checks go
	// through the service's own socket, where only the new generation
	// accepts now.
	return httpOK(ctx, r.URL, healthAddr(r.URL))
}

// notice follows the engine: systemd's notifications, the first serving
// generation, what a failed generation ran.
func (s *Supervisor) notice(n lifecycle.Notice) {
	s.events.Notice(n)
	s.count(n)
	if fns := s.subscribers(); len(fns) > 0 {
		r := observe.Record(n)
		r.Service, r.Source = s.cfg.Name, "supervisor"
		for _, fn := range fns {
			fn(r)
		}
	}
	switch n.Kind {
	case lifecycle.NoticeServing:
		s.servOnce.Do(func() { close(s.serving) })
		if s.isServing() {
			daemon.SdNotify(false, "READY=1\nSTATUS="+s.statusLine())
		}
	case lifecycle.NoticeUpgrading:
		s.mu.Lock()
		s.reloading = true
		s.mu.Unlock()
		sdnotify.Reloading("upgrading")
	case lifecycle.NoticeProbationFailed, lifecycle.NoticeStartFailed:
		if n.Kind == lifecycle.NoticeStartFailed && n.Gen.Reason != lifecycle.ReasonUpgrade {
			break // a rollback or restart runs a binary that served: not a failed release
		}
		if g, ok := n.Gen.Proc.(*generation); ok {
			if sum := ranSHA256(g); sum != "" {
				s.mu.Lock()
				s.failedSHA = sum
				s.mu.Unlock()
			}
		}
	case lifecycle.NoticeFallingBack:
		if g, ok := n.Gen.Proc.(*generation); ok {
			s.mu.Lock()
			s.crashLoopSHA = ranSHA256(g)
			s.mu.Unlock()
		}
	case lifecycle.NoticeStopping:
		daemon.SdNotify(false, "STOPPING=1")
	}
	if n.Kind == lifecycle.NoticeServing && n.Gen.Reason == lifecycle.ReasonFallback {
		// Fallen back after a crash loop: the release that runs again
		// goes back on disk, the one that kept crashing is marked failed.
		// Not here: notices must be short, and this may wait for a lock.
		if g, ok := n.Gen.Proc.(*generation); ok {
			s.mu.Lock()
			failed := s.crashLoopSHA
			s.crashLoopSHA = ""
			s.mu.Unlock()
			go s.restoreInstalled(g, failed)
		}
	}
}

// count keeps the counters that status reports (Status.Counters), as the
// library counts them: an upgrade succeeded when its new generation took
// over (and passed its probation, when one is asked for), failed when its
// new generation never took over, was rolled back when the new generation
// failed its probation.
func (s *Supervisor) count(n lifecycle.Notice) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &s.counters
	switch {
	case n.Kind == lifecycle.NoticeKilled:
		c.DrainsForced++
	case n.Op != lifecycle.OpUpgrade:
	case n.Kind == lifecycle.NoticeFailed:
		c.UpgradesFailed++
	case n.Kind == lifecycle.NoticeProbationFailed:
		c.UpgradesRolledBack++
	case n.Kind == lifecycle.NoticeProbationPassed:
		c.UpgradesSucceeded++
	case n.Kind == lifecycle.NoticeSwitched && s.cfg.Probation <= 0 && n.Gen != nil && n.Gen.Reason == lifecycle.ReasonUpgrade:
		c.UpgradesSucceeded++
	}
}

// Subscribe calls fn with the record of every lifecycle step of the
// service from now on (an upgrade started, a generation started, got
// ready, took over, drained, failed, was rolled back...; the records the
// events file receives, and the control requests that --http-control
// answered), as the library's Upgrader.Subscribe does for one generation.
// fn is called synchronously: keep it short. cancel ends the
// subscription.
func (s *Supervisor) Subscribe(fn func(events.Record)) (cancel func()) {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	if s.subs == nil {
		s.subs = map[int]func(events.Record){}
	}
	id := s.subsNext
	s.subsNext++
	s.subs[id] = fn
	return func() {
		s.subsMu.Lock()
		delete(s.subs, id)
		s.subsMu.Unlock()
	}
}

func (s *Supervisor) subscribers() []func(events.Record) {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	fns := make([]func(events.Record), 0, len(s.subs))
	for _, fn := range s.subs {
		fns = append(fns, fn)
	}
	return fns
}

func (s *Supervisor) isServing() bool {
	select {
	case <-s.serving:
		return true
	default:
		return false
	}
}

// requestStop asks Run to drain everything and return.
func (s *Supervisor) requestStop() {
	s.stopOnce.Do(func() { close(s.stopReq) })
}

// upgradeBySignal runs an upgrade for SIGHUP. Under Type=notify-reload
// systemd waits for RELOADING=1 then READY=1 after its reload signal: a
// refused upgrade still answers, or `systemctl reload` would hang.
func (s *Supervisor) upgradeBySignal(ctx context.Context) {
	_, err := s.Upgrade(ctx)
	if err == nil {
		return
	}
	s.log.Error("upgrade by signal failed", "err", err)
	if errors.Is(err, contract.ErrBusy) || errors.Is(err, contract.ErrTooManyDraining) || errors.Is(err, contract.ErrStopped) || errors.Is(err, contract.ErrNotReady) {
		sdnotify.Reloading("upgrade refused")
		daemon.SdNotify(false, "READY=1\nSTATUS="+s.statusLine())
	}
}

// watchBinary upgrades when the app's binary changes on disk (opt-in): a
// new file (or new contents) that stays the same for one more poll.
func (s *Supervisor) watchBinary(ctx context.Context) {
	seen := fingerprint(s.cfg.Command[0])
	var pending string
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := fingerprint(s.cfg.Command[0])
		switch {
		case now == "" || now == seen:
			pending = ""
		case now != pending:
			pending = now // changed: wait until it stays put (a copy may be under way)
		default:
			seen, pending = now, ""
			s.log.Info("binary changed on disk; upgrading", "binary", s.cfg.Command[0])
			if _, err := s.Upgrade(ctx); err != nil {
				s.log.Error("upgrade after a binary change failed", "err", err)
			}
		}
	}
}

// Upgrade starts a new generation on the same sockets, waits until it is
// ready, then drains the old one (lifecycle.Engine.Upgrade). A failed
// start, or a failed probation, puts the serving release back on disk.
func (s *Supervisor) Upgrade(ctx context.Context) (contract.UpgradeResult, error) {
	res, err := s.engine.Upgrade(ctx)
	if errors.Is(err, contract.ErrBusy) {
		return contract.UpgradeResult{}, err // the upgrade under way is not ours to report on
	}
	s.mu.Lock()
	reloading, failed := s.reloading, s.failedSHA
	s.reloading, s.failedSHA = false, ""
	s.mu.Unlock()
	if reloading {
		daemon.SdNotify(false, "READY=1\nSTATUS="+s.statusLine())
	}
	if err != nil {
		if startFailed(err) || errors.Is(err, ErrRolledBack) || errors.Is(err, contract.ErrCanaryFailed) || errors.Is(err, errCanaryRolledBack) {
			s.restoreInstalled(s.servingOrPrevious(), failed)
		}
		return contract.UpgradeResult{}, err
	}
	return upgradeResult(res), nil
}

// Rollback starts the previous generation's binary again as a new
// generation (`baton rollback`); during a probation it ends it with that
// rollback.
func (s *Supervisor) Rollback(ctx context.Context) (contract.UpgradeResult, error) {
	res, err := s.engine.Rollback(ctx)
	if err != nil {
		return contract.UpgradeResult{}, err
	}
	s.restoreInstalled(s.currentGen(), "")
	return upgradeResult(res), nil
}

func upgradeResult(r lifecycle.Result) contract.UpgradeResult {
	return contract.UpgradeResult{PID: r.PID, Generation: r.N, Binary: r.Binary, ReadyAfter: r.ReadyAfter,
		AppStartup: r.AppStartup, Took: r.Took, Draining: r.Draining}
}

// startFailed reports whether an upgrade failed because the new binary was
// started and did not make it (rather than being refused before anything
// was tried: busy, too many draining, stopping, no state).
func startFailed(err error) bool {
	return errors.Is(err, contract.ErrChildExited) || errors.Is(err, contract.ErrReadyTimeout) || errors.Is(err, contract.ErrBinary)
}

// servingOrPrevious is the generation whose release belongs on disk after
// a failed upgrade: the current one, or, when it is gone (it failed its
// probation and the rollback failed too: the engine restarts the previous
// binary), the previous one.
func (s *Supervisor) servingOrPrevious() *generation {
	cur := s.currentGen()
	if cur == nil {
		return nil
	}
	select {
	case <-cur.Exited():
		if p := s.engine.Snapshot().Previous; p != nil {
			if g, ok := p.Proc.(*generation); ok {
				return g
			}
		}
	default:
	}
	return cur
}

func (s *Supervisor) currentGen() *generation {
	if cur := s.engine.Current(); cur != nil {
		g, _ := cur.Proc.(*generation)
		return g
	}
	return nil
}

// Status reports the supervisor and its generations.
func (s *Supervisor) Status() Status {
	snap := s.engine.Snapshot()
	st := Status{
		Name:        s.cfg.Name,
		Phase:       string(snap.Phase),
		StartedAt:   s.started,
		Uptime:      time.Since(s.started),
		Draining:    []int{},
		Last:        outcome(snap.Last),
		OpenHandles: -1,
	}
	for _, l := range s.cfg.Listen {
		st.Listeners = append(st.Listeners, l.Network+" "+l.Addr)
	}
	sup := &Info{PID: os.Getpid(), Restarts: snap.Restarts, Command: s.cfg.Command, LogFile: s.cfg.LogFile}
	views := append([]lifecycle.View(nil), snap.Draining...)
	if c := snap.Current; c != nil {
		st.PID, st.Generation, st.Binary = c.PID, c.N, c.Binary
		st.OpenHandles = c.Proc.(*generation).handles()
		st.ConnsTaken = int(c.Proc.(*generation).connsTaken.Load())
		select {
		case <-c.Proc.Exited():
		default:
			views = append(views, *c)
		}
	}
	if c := snap.Starting; c != nil && c.PID > 0 {
		select {
		case <-c.Proc.Exited():
		default:
			views = append(views, *c) // starting, or a canary (proxy mode)
		}
	}
	for _, v := range views {
		if (snap.Current == nil || v.N != snap.Current.N) && (snap.Starting == nil || v.N != snap.Starting.N) {
			st.Draining = append(st.Draining, v.PID)
		}
		g := v.Proc.(*generation)
		sup.Generations = append(sup.Generations, GenInfo{Generation: v.N, PID: v.PID, Binary: v.Binary, SHA256: g.binarySHA256(),
			StartedAt: v.Started, ReadyAfter: v.ReadyAfter, State: v.State.String(),
			ConnsTaken: g.connsTaken.Load(), ConnsPassed: g.connsPassed.Load()})
	}
	if s.front != nil {
		pids := map[int]int{}
		for _, g := range sup.Generations {
			pids[g.Generation] = g.PID
		}
		sup.Proxy = s.front.info(pids)
	}
	st.Supervisor = sup
	s.mu.Lock()
	c := s.counters
	s.mu.Unlock()
	c.Restarts = int64(snap.Restarts)
	st.Counters = &c
	return st
}

// outcome is the engine's last outcome as status reports it.
func outcome(o *lifecycle.Outcome) *contract.Outcome {
	if o == nil {
		return nil
	}
	out := &contract.Outcome{At: o.At, OK: o.Err == nil}
	if o.Err == nil && o.Result != nil {
		r := upgradeResult(*o.Result)
		out.Result = &r
	}
	if o.Err != nil {
		out.Code, out.Error = contract.CodeOf(o.Err), o.Err.Error()
	}
	return out
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
		ports, paths := ports, paths
		if s.front != nil {
			// Proxy mode: its connections are the proxy's, to its private sockets.
			ports, paths = s.front.privatePorts(g.Generation), nil
		}
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

func (s *Supervisor) handle(ctx context.Context, req contract.Request) contract.Response {
	switch req.Op {
	case ctl.OpStatus:
		return contract.OKResponse(s.statusWithConns())
	case ctl.OpUpgrade:
		if req.Binary != "" {
			return contract.Response{Code: contract.CodeBadRequest, Error: "a request with a binary is answered by the baton CLI, which stages it first: update baton, or install the new binary at " + s.cfg.Command[0] + " and run `baton upgrade`"}
		}
		ctx = withExpectedSHA256(ctx, req.ExpectSHA256)
		if req.Canary != nil {
			res, err := s.upgradeCanary(ctx, *req.Canary)
			return contract.UpgradeResponse(res, err)
		}
		res, err := s.Upgrade(ctx)
		return contract.UpgradeResponse(res, err)
	case ctl.OpRollback:
		if c := s.canary(); c != nil {
			res, err := s.endCanary(ctx, c, cmdRollback, 0)
			return contract.UpgradeResponse(res, err)
		}
		res, err := s.Rollback(ctx)
		return contract.UpgradeResponse(res, err)
	case contract.OpPromote, contract.OpWeight:
		return s.steerCanary(ctx, req)
	case ctl.OpLogs:
		lines, next := s.logOut.Since(req.Since)
		return contract.OKResponse(LogsResult{Lines: lines, Next: next})
	case ctl.OpStop:
		// Answered before the stop begins (and Run waits for the answers
		// being written before it returns).
		st := s.Status()
		ctl.AfterReply(ctx, s.requestStop)
		return contract.OKResponse(st)
	}
	return contract.Response{Code: contract.CodeBadRequest, Error: "unknown operation " + req.Op}
}

// openFDs counts the open descriptors or handles of pid (-1: unknown).
func openFDs(pid int) int {
	n, err := handlecount.Of(pid)
	if err != nil {
		return -1
	}
	return n
}
