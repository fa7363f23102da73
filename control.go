package baton

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/handlecount"
	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/lifecycle"
)

// controlDesc names the control endpoint among the handed-over files.
var controlDesc = handoff.FileDesc{Kind: handoff.KindListener, Network: "baton-control", Name: "control"}

// Status is what `baton status` reports about a generation.
type Status struct {
	Name       string        `json:"name"`
	PID        int           `json:"pid"`
	Generation int           `json:"generation"`
	Phase      string        `json:"phase"`
	Binary     string        `json:"binary"`
	StartedAt  time.Time     `json:"started_at"`
	ReadyAt    *time.Time    `json:"ready_at,omitempty"`
	Uptime     time.Duration `json:"uptime_ns"`
	Listeners  []string      `json:"listeners"`
	// OpenHandles: open file descriptors (Unix) or handles (Windows) of
	// this process; flat across upgrades unless something leaks.
	OpenHandles int   `json:"open_handles"`
	Draining    []int `json:"draining_pids"`
	ParentPID   int   `json:"parent_pid,omitempty"`
	// ConnsTaken counts the idle client connections the previous
	// generation passed to this one at its handover (httpdrain.Migrator).
	ConnsTaken int             `json:"conns_taken,omitempty"`
	Last       *UpgradeOutcome `json:"last_upgrade,omitempty"`
	// Counters: upgrades, rollbacks and forced drains of the service
	// across its generations (carried from each to the next).
	Counters Counters `json:"counters"`
}

// Status reports this generation's state.
func (u *Upgrader) Status() Status {
	snap := u.engine.Snapshot() // not under u.mu: the engine may call back into u
	u.mu.Lock()
	defer u.mu.Unlock()
	s := Status{
		Name:        u.opts.Name,
		PID:         os.Getpid(),
		Generation:  u.generation,
		Phase:       u.phase,
		Binary:      u.binary,
		StartedAt:   u.startedAt,
		Uptime:      time.Since(u.startedAt),
		Listeners:   u.listenerAddrs(),
		OpenHandles: openHandles(),
		Draining:    []int{},
		Last:        outcomeOf(snap.Last),
		Counters:    u.counters,
		ConnsTaken:  u.connsTaken,
	}
	if s.Phase == PhaseServing && snap.Phase == lifecycle.PhaseUpgrading {
		s.Phase = PhaseUpgrading
	}
	if !u.readyAt.IsZero() {
		t := u.readyAt
		s.ReadyAt = &t
	}
	if u.parent != nil {
		s.ParentPID = u.parent.Msg.Parent.PID
	}
	for _, p := range u.ancestors.list() {
		s.Draining = append(s.Draining, p.PID)
	}
	return s
}

// openControl takes the inherited control endpoint or creates it. A new
// generation does not answer on it before Ready: until then its parent does.
func (u *Upgrader) openControl() error {
	if u.opts.Name == "" {
		return nil
	}
	var inherited *pooled
	if p, ok := u.claim(controlDesc); ok {
		inherited = &p
	}
	ep, err := openControlEndpoint(u.opts.Name, inherited)
	if errors.Is(err, ctl.ErrUnsupported) {
		u.log.Warn("no control endpoint on this platform yet", "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	u.ctl = ep
	return nil
}

// serveControl starts answering on the control endpoint (from a fresh
// listener, so that it can be stopped and started again).
func (u *Upgrader) serveControl() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ctl == nil || u.ctlSrv != nil || u.stopped || u.handedOver {
		return // (a failed rescue after our handover: the successor's)
	}
	ln, err := u.ctl.listen()
	if err != nil {
		u.log.Error("control endpoint unusable", "err", err)
		return
	}
	u.ctlSrv = ctl.Serve(ln, u.handleControl, u.log)
}

func (u *Upgrader) stopControl() {
	u.mu.Lock()
	srv := u.ctlSrv
	u.ctlSrv = nil
	if srv != nil {
		u.ctlStopped = append(u.ctlStopped, srv) // Stop waits for its answers
	}
	u.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

func (u *Upgrader) handleControl(ctx context.Context, req ctl.Request) ctl.Response {
	switch req.Op {
	case ctl.OpStatus:
		return ctl.OKResponse(u.Status().wire())
	case ctl.OpRollback:
		return ctl.Response{Code: ctl.CodeUnsupported, Error: "rollback is run by the baton run supervisor; a library service rolls back by upgrading to the previous binary (baton upgrade --binary PREVIOUS)"}
	case ctl.OpLogs:
		return ctl.Response{Code: ctl.CodeUnsupported, Error: "logs are kept by the baton run supervisor; a library service writes its own"}
	case ctl.OpStop:
		// Answer first, then stop: the caller learns that the stop was
		// accepted; the app then drains (Exit is closed). Stop begins
		// only once the answer is written: an app that ends its process
		// as soon as it has drained cannot cut the answer off. Stop waits
		// for the server's connections, this one among them: a goroutine.
		st := u.Status().wire()
		ctl.AfterReply(ctx, func() { go u.Stop() })
		return ctl.OKResponse(st)
	case ctl.OpUpgrade:
		var res UpgradeResult
		var err error
		if req.Binary != "" {
			res, err = u.UpgradeTo(ctx, req.Binary)
		} else {
			res, err = u.Upgrade(ctx)
		}
		return ctl.UpgradeOutcome(res.wire(), err)
	}
	return ctl.Response{Code: ctl.CodeBadRequest, Error: "unknown operation " + req.Op}
}

// The public Status, UpgradeResult and UpgradeOutcome are converted to the
// control protocol's documents (internal/contract) here and nowhere else.

func (s Status) wire() contract.Status {
	return contract.Status{
		Name:        s.Name,
		PID:         s.PID,
		Generation:  s.Generation,
		Phase:       s.Phase,
		Binary:      s.Binary,
		StartedAt:   s.StartedAt,
		ReadyAt:     s.ReadyAt,
		Uptime:      s.Uptime,
		Listeners:   s.Listeners,
		OpenHandles: s.OpenHandles,
		Draining:    s.Draining,
		ParentPID:   s.ParentPID,
		ConnsTaken:  s.ConnsTaken,
		Last:        s.Last.wire(),
		Counters:    &s.Counters,
	}
}

func (r UpgradeResult) wire() contract.UpgradeResult {
	return contract.UpgradeResult{PID: r.PID, Generation: r.Generation, Binary: r.Binary, ReadyAfter: r.ReadyAfter,
		AppStartup: r.AppStartup, Took: r.Took, Draining: r.Draining}
}

func (o *UpgradeOutcome) wire() *contract.Outcome {
	if o == nil {
		return nil
	}
	w := &contract.Outcome{At: o.At, OK: o.OK, Code: o.Code, Error: o.Error}
	if o.Result != nil {
		r := o.Result.wire()
		w.Result = &r
	}
	return w
}

// controlEndpoint is where a generation answers control requests; how it
// passes from one generation to the next is platform code.
type controlEndpoint interface {
	listen() (net.Listener, error) // a fresh listener on the endpoint
	item() (handoff.Item, bool)    // what to hand to the next generation, if anything
	close()
}

func openHandles() int {
	n, err := handlecount.Count()
	if err != nil {
		return -1
	}
	return n
}
