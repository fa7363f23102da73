package baton

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/lifecycle"
	"github.com/baton-go/baton/internal/observe"
)

// envSupervisor is set by `baton run` for its generations.
const envSupervisor = contract.EnvSupervisor

// Phases of a generation, as reported by Status.
const (
	PhaseStarting  = "starting"  // New called, Ready not yet
	PhaseServing   = "serving"   // ready, current generation
	PhaseUpgrading = "upgrading" // an upgrade is running
	PhaseDraining  = "draining"  // handed over, draining
	PhaseStopped   = "stopped"
)

// Upgrader is one generation's handle on its sockets and on the upgrade
// machinery. Create it with New, early in main.
type Upgrader struct {
	opts         Options
	log          *slog.Logger
	generation   int
	binary       string
	parent       *handoff.Inherited // nil for a first generation
	successor    *handoff.Child     // the child this generation handed over to (u.mu)
	connOut      chan connBatch     // under baton run: batches of client connections for the supervisor to pull (conns.go)
	pulled       connBatch          // the batch the supervisor pulled last (its link goroutine only)
	linkDone     chan struct{}      // closed when the supervisor link's Serve returns
	linkDrained  atomic.Bool        // the supervisor asked us to drain over the link (it relays our conns)
	state        []byte             // from the parent
	ancestors    ancestors          // older generations that may still drain
	startedAt    time.Time
	supervised   bool              // under `baton run`
	link         *handoff.LinkConn // to the supervisor (library apps under `baton run`)
	stopDrainSig func()            // undoes watchDrainSignal
	acceptGate   *gate             // non-nil in a new generation: Accept waits for Ready

	// The generation lifecycle (upgrade, handover, drain deadline) is
	// internal/lifecycle's; self is this generation in it.
	engine   *lifecycle.Engine
	self     *lifecycle.Generation
	events   *observe.Recorder // nil without a control endpoint name
	subsMu   sync.Mutex
	subs     map[int]func(events.Record)
	subsNext int
	binaryMu sync.Mutex // UpgradeTo: one install at a time

	mu         sync.Mutex
	entries    []*entry
	pool       []pooled // inherited, not yet claimed
	phase      string
	readyAt    time.Time
	handedOver bool
	stopped    bool
	reloading  bool            // RELOADING=1 was sent for the upgrade under way
	counters   Counters        // carried from the parent, on to the child
	connsTaken int             // client connections the parent passed to us (conns.go)
	ctl        controlEndpoint // nil without a control endpoint
	ctlSrv     *ctl.Server
	ctlStopped []*ctl.Server // stopped servers that may still be answering

	readyOnce sync.Once
	readyErr  error
	exitC     chan struct{}
	exitOnce  sync.Once
	exitAt    time.Time
	stopSig   func()
	stoppedC  chan struct{} // closed by Stop
	stopDone  chan struct{} // closed when the first Stop has finished
}

// New prepares this generation: it reads the handoff from the previous
// generation (or systemd's socket activation) and opens the control
// endpoint. A new generation that cannot understand its parent's handoff
// returns the error (after telling the parent why); the program should then
// exit non-zero.
func New(opts Options) (*Upgrader, error) {
	opts.setDefaults()
	u := &Upgrader{
		opts:       opts,
		log:        opts.Logger.With("component", "baton"),
		generation: 1,
		phase:      PhaseStarting,
		startedAt:  time.Now(),
		exitC:      make(chan struct{}),
		stoppedC:   make(chan struct{}),
		stopDone:   make(chan struct{}),
		connOut:    make(chan connBatch),
		linkDone:   make(chan struct{}),
	}
	if opts.Name != "" {
		if err := ctl.CheckName(opts.Name); err != nil {
			return nil, fmt.Errorf("baton: %w", err)
		}
	}
	// Under `baton run` the supervisor owns the control endpoint (same
	// name) and runs upgrades; the sockets come by socket activation.
	if sup := os.Getenv(envSupervisor); sup != "" {
		u.supervised = true
		u.opts.Name = ""
		u.opts.UpgradeSignal = NoSignal
		if n, err := strconv.Atoi(os.Getenv(contract.EnvGeneration)); err == nil && n > 0 {
			u.generation = n
		}
		u.log.Debug("running under baton run", "supervisor", sup)
	}
	in, err := handoff.Receive(opts.ReadyTimeout, opts.MaxStateSize)
	if err != nil {
		return nil, fmt.Errorf("baton: handoff from the previous generation: %w", err)
	}
	u.binary = opts.Binary
	if in != nil {
		u.parent = in
		in.TakeConns(u.takeConns) // idle client connections our parent's drain passes (conns.go)
		u.generation = in.Msg.Generation
		u.state = in.State
		u.ancestors.add(in.Msg.Draining...)
		if in.Msg.Counters != nil {
			u.counters = *in.Msg.Counters
		}
		if !u.supervised {
			// Under baton run (Windows) the parent is the supervisor, which
			// does not drain.
			u.ancestors.add(in.Msg.Parent)
		}
		if u.binary == "" {
			u.binary = in.Msg.Binary
		}
		for i, d := range in.Msg.Files {
			u.pool = append(u.pool, pooled{desc: d, file: in.Files[i]})
		}
	} else {
		u.pool = append(u.pool, socketActivated(u.log)...)
	}
	if u.supervised {
		if err := u.joinSupervisor(); err != nil {
			for _, p := range u.pool {
				p.close()
			}
			return nil, fmt.Errorf("baton: handoff from the supervisor: %w", err)
		}
	}
	if u.binary == "" {
		if u.binary, err = executablePath(); err != nil {
			return nil, fmt.Errorf("baton: cannot find the running executable (set Options.Binary): %w", err)
		}
	}
	if u.parent != nil || u.supervised {
		u.acceptGate = newGate()
	}
	u.log = u.log.With("gen", u.generation)
	u.newEngine()
	if u.parent != nil && u.parent.Msg.RolledBack != "" {
		// Started by a rescue: the upgrade before us did not hold.
		u.counters.UpgradesRolledBack++
		u.engine.SetLast(lifecycle.Outcome{At: time.Now(), Op: lifecycle.OpRollback,
			Err: fmt.Errorf("%w: %s", ErrRolledBack, u.parent.Msg.RolledBack)})
		u.log.Warn("started to replace a generation that died during its probation", "why", u.parent.Msg.RolledBack)
	}
	if err := u.openControl(); err != nil {
		u.closeAll()
		return nil, err
	}
	if u.opts.Name != "" && !u.supervised {
		// Every generation appends its steps to the service's events file
		// (under baton run the supervisor keeps it).
		if el, err := events.Open(events.Path(ctl.Dir(), u.opts.Name), u.opts.Name, "library", 0); err != nil {
			u.log.Warn("events are not recorded", "err", err)
		} else {
			u.events = &observe.Recorder{Log: el, Logger: u.log}
		}
	}
	u.watchSignal()
	if u.supervised {
		u.stopDrainSig = u.watchDrainSignal()
	}
	u.serveSupervisor()
	return u, nil
}

// HasParent reports whether this generation was started by an upgrade.
func (u *Upgrader) HasParent() bool { return u.parent != nil }

// Generation returns this generation's number: 1 for a fresh start, one
// more than the parent's after an upgrade.
func (u *Upgrader) Generation() int { return u.generation }

// State returns the state blob the previous generation handed over (nil if
// none). It was checked against its checksum and size bound.
func (u *Upgrader) State() []byte { return u.state }

// Exit returns a channel that is closed when this generation must drain:
// after it handed over to a new generation, or after Stop.
func (u *Upgrader) Exit() <-chan struct{} { return u.exitC }

// IdleGrace returns Options.IdleGrace (0 became the 2s default; negative
// means no grace), to pass as it is to httpdrain.Options.IdleGrace.
func (u *Upgrader) IdleGrace() time.Duration { return u.opts.IdleGrace }

// DrainContext returns a context whose deadline is the drain deadline
// (DrainTimeout after the handover or Stop; after now if called before).
func (u *Upgrader) DrainContext() (context.Context, context.CancelFunc) {
	u.mu.Lock()
	at := u.exitAt
	u.mu.Unlock()
	if at.IsZero() {
		at = time.Now()
	}
	return context.WithDeadline(context.Background(), at.Add(u.opts.DrainTimeout))
}

// Ready says that this generation serves. In a new generation it tells the
// parent, waits for the go-ahead (the parent then stops accepting), and
// takes over the control endpoint, the PID file and systemd's MAINPID. It
// returns ErrAborted when the parent called the upgrade off (timeout): the
// process should then exit. Calling it again returns the first result.
func (u *Upgrader) Ready() error {
	u.readyOnce.Do(func() { u.readyErr = u.ready() })
	return u.readyErr
}

func (u *Upgrader) ready() error {
	u.mu.Lock()
	stopped := u.stopped
	u.mu.Unlock()
	if stopped {
		if u.parent != nil {
			u.parent.Refuse("stopped", "the new generation was stopped before it got ready")
		}
		return fmt.Errorf("baton: Ready: %w", ErrStopped)
	}
	if u.parent != nil {
		ctx, cancel := context.WithTimeout(context.Background(), u.opts.ReadyTimeout)
		err := u.parent.Ready(ctx)
		cancel()
		// Restore stderr before anything is logged: if the parent is gone,
		// the pipe is broken.
		if rerr := u.parent.RestoreStderr(); rerr != nil {
			u.log.Warn("restoring stderr", "err", rerr)
		}
		if errors.Is(err, handoff.ErrAborted) {
			u.log.Error("the previous generation called the upgrade off", "err", err)
			return fmt.Errorf("baton: %w", err)
		}
		if err != nil {
			// Parent gone: somebody has to serve.
			u.log.Warn("previous generation vanished during the handoff; serving anyway", "err", err)
		}
	}
	u.mu.Lock()
	if u.stopped {
		u.mu.Unlock()
		return fmt.Errorf("baton: Ready: %w", ErrStopped)
	}
	if u.acceptGate != nil {
		u.acceptGate.open()
	}
	u.phase = PhaseServing
	u.readyAt = time.Now()
	if u.parent != nil && u.parent.Msg.RolledBack == "" && !u.supervised {
		u.counters.UpgradesSucceeded++ // the upgrade that started us held
	}
	// Inherited sockets nobody asked for are closed here, not leaked.
	for _, p := range u.pool {
		u.log.Warn("inherited socket not claimed by this generation; closing it", "kind", p.desc.Kind, "network", p.desc.Network, "addr", p.desc.Addr, "name", p.desc.Name)
		p.close()
	}
	u.pool = nil
	u.mu.Unlock()
	u.engine.MarkServing(u.self)

	if u.opts.PIDFile != "" {
		if err := writePIDFile(u.opts.PIDFile); err != nil {
			u.log.Error("writing PID file", "path", u.opts.PIDFile, "err", err)
		}
	}
	notifyReady(u.log, u.parent != nil, fmt.Sprintf("generation %d serving (pid %d)", u.generation, os.Getpid()))
	u.serveControl()
	u.removeStaleBinaries()
	u.log.Info("ready", "pid", os.Getpid(), "startup", handoff.SinceStart().Round(time.Millisecond))
	return nil
}

// Stop ends this generation: it closes Exit (if not closed yet), stops
// accepting on every listener and closes every socket and file. When this
// generation has not handed over, it is the last one: it also removes unix
// socket files, the control endpoint and the PID file. Call it when the app
// has drained, typically deferred in main.
func (u *Upgrader) Stop() {
	// Handed over: the successor is on probation, and we keep the sockets
	// (and stay able to start our binary again) until it ends.
	if u.engine.HandingOver(u.self) {
		u.engine.WaitProbation()
	}
	u.mu.Lock()
	if u.stopped {
		u.mu.Unlock()
		// A Stop under way (`baton stop` asked it): wait until it is done,
		// or the process would end before its files are removed.
		<-u.stopDone
		return
	}
	u.stopped = true
	u.phase = PhaseStopped
	u.mu.Unlock()
	defer close(u.stopDone)
	// An upgrade under way is called off, unless its go-ahead is being
	// given already (the engine decides under its lock).
	u.engine.Halt()
	u.engine.WaitCommit() // a go-ahead being given: how it ended decides below
	close(u.stoppedC)     // no forced exit: we are done
	u.engine.WaitDrains() // our own drain's end is recorded before we go
	u.mu.Lock()
	// The sockets' files, the control endpoint and the PID file belong to
	// the generation that serves: a first generation, or a new one once it
	// got ready. A new generation that never got ready must not remove its
	// parent's files; one that handed over leaves them to its successor.
	last := (u.parent == nil || !u.readyAt.IsZero()) && !u.handedOver && !u.engine.HandingOver(u.self)
	u.mu.Unlock()
	if last {
		u.engine.RecordStop() // recorded (events, subscribers) like baton run's stop
	}
	if u.stopSig != nil {
		u.stopSig()
	}
	if u.stopDrainSig != nil {
		u.stopDrainSig()
	}
	if u.acceptGate != nil {
		u.acceptGate.shut() // an Accept still waiting for Ready returns
	}
	u.signalExit()
	if last {
		notifyStopping()
		// A parent guarding our probation: this end is chosen.
		u.parent.ReportEnd(handoff.EndStopping)
	}
	u.closeLink()
	u.closeAll()
	if last {
		for _, e := range u.entries {
			if e.unixPath != "" {
				os.Remove(e.unixPath)
			}
		}
		if u.opts.Name != "" {
			ctl.Remove(u.opts.Name)
		}
		if u.opts.PIDFile != "" {
			removePIDFile(u.opts.PIDFile)
		}
	}
}

func (u *Upgrader) closeAll() {
	u.mu.Lock()
	srvs := append([]*ctl.Server(nil), u.ctlStopped...)
	if u.ctlSrv != nil {
		srvs = append(srvs, u.ctlSrv)
	}
	u.ctlSrv = nil
	entries := append([]*entry(nil), u.entries...)
	ep := u.ctl
	pool := u.pool
	u.pool = nil
	u.mu.Unlock()
	// Let an answer in progress (the outcome of the upgrade that made us
	// drain) reach its caller before the process goes away.
	done := make(chan struct{})
	go func() {
		for _, srv := range srvs {
			srv.Close()
			srv.Wait()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	for _, e := range entries {
		if gl, ok := e.ln.(*gatedListener); ok {
			gl.closeSocket()
		} else if e.ln != nil {
			e.ln.Close()
		}
		if e.pc != nil {
			e.pc.Close()
		}
		e.item.Close()
	}
	if ep != nil {
		ep.close()
	}
	for _, p := range pool {
		p.close()
	}
}

func (u *Upgrader) signalExit() {
	u.exitOnce.Do(func() {
		u.mu.Lock()
		u.exitAt = time.Now()
		u.mu.Unlock()
		close(u.exitC)
	})
}

// watchSignal turns the upgrade signal into upgrades. It is installed at
// New so that an early signal does not kill the process (SIGHUP's default).
func (u *Upgrader) watchSignal() {
	if u.opts.UpgradeSignal == nil || u.opts.UpgradeSignal == NoSignal {
		return
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, u.opts.UpgradeSignal)
	done := make(chan struct{})
	u.stopSig = func() { signal.Stop(c); close(done) }
	go func() {
		for {
			select {
			case <-done:
				return
			case <-c:
				res, err := u.Upgrade(context.Background())
				if err != nil {
					u.log.Error("upgrade by signal failed; this generation keeps serving", "signal", u.opts.UpgradeSignal.String(), "err", err)
				} else {
					u.log.Info("upgrade by signal done", "pid", res.PID, "generation", res.Generation)
				}
			}
		}
	}()
}

// listenerAddrs lists what this generation serves, for Status.
func (u *Upgrader) listenerAddrs() []string {
	var out []string
	for _, e := range u.entries {
		out = append(out, e.String())
	}
	return out
}

// executablePath is the path the program was started as, made absolute,
// without resolving symlinks: a deployment that switches a symlink (or
// renames a new file into place) is picked up by the next upgrade.
func executablePath() (string, error) {
	if len(os.Args) > 0 && os.Args[0] != "" {
		if p, err := exec.LookPath(os.Args[0]); err == nil {
			if abs, err := filepath.Abs(p); err == nil {
				return abs, nil
			}
		}
	}
	return os.Executable()
}
