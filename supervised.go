package baton

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/handoff"
)

// Under `baton run` the sockets come by socket activation; the rest of the
// handoff (state blob, named files, generation number) comes over the
// supervisor link, and the supervisor asks through it for this generation's
// state when it starts the next one, and tells it to drain.

// joinSupervisor connects to the supervisor link, if `baton run` gave one,
// and takes what the previous generation handed over.
func (u *Upgrader) joinSupervisor() error {
	link, handed, err := handoff.DialLink(u.opts.ReadyTimeout, u.opts.MaxStateSize)
	if errors.Is(err, handoff.ErrLink) {
		// No link (refused, or gone): serve anyway, without the previous
		// generation's state; the supervisor drains us by signal then.
		u.log.Warn("no link to the supervisor; starting without the previous generation's state and files", "err", err)
		return nil
	}
	if err != nil || link == nil {
		return err // a state this generation cannot take: refuse, as a library child would
	}
	u.link = link
	if handed.Msg.Generation > 0 {
		u.generation = handed.Msg.Generation
	}
	if u.parent != nil {
		// The supervisor is our handoff parent (Windows): the sockets,
		// state and files came through the handoff; the link is for later.
		handed.Close()
		return nil
	}
	u.state = handed.State
	for _, it := range handed.Items {
		u.pool = append(u.pool, pooled{desc: it.Desc, file: it.File})
	}
	return nil
}

// serveSupervisor answers the supervisor's requests until the link closes.
func (u *Upgrader) serveSupervisor() {
	if u.link == nil {
		return
	}
	go func() {
		hooks := &handoff.LinkConnsHooks{Take: u.takeConns, Next: u.nextConnBatch, Result: u.connBatchResult}
		drain := func() {
			u.linkDrained.Store(true) // the supervisor pulls our idle conns from now on
			u.drainForSupervisor()
		}
		err := u.link.Serve(u.handOverToSupervisor, drain, hooks)
		close(u.linkDone)
		u.mu.Lock()
		stopped := u.stopped
		u.mu.Unlock()
		if !stopped {
			u.log.Warn("supervisor link closed", "err", err)
		}
	}()
}

// handOverToSupervisor makes what the next generation gets: the state blob
// and the named files (the sockets are the supervisor's already).
func (u *Upgrader) handOverToSupervisor() (*handoff.Handed, error) {
	var state []byte
	if u.opts.StateFunc != nil {
		var err error
		if state, err = u.opts.StateFunc(); err != nil {
			return nil, fmt.Errorf("state for the next generation: %w", err)
		}
		if int64(len(state)) > u.opts.MaxStateSize {
			return nil, fmt.Errorf("%w: %d bytes, MaxStateSize is %d", ErrStateTooLarge, len(state), u.opts.MaxStateSize)
		}
	}
	h := &handoff.Handed{Msg: handoff.Handoff{Generation: u.generation + 1, Parent: handoff.Self(), Binary: u.binary}, State: state}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stopped {
		return nil, ErrStopped
	}
	for _, e := range u.entries {
		if e.desc.Kind == handoff.KindFile {
			h.Items = append(h.Items, e.item)
		}
	}
	return h, nil
}

// drainForSupervisor is the handover seen from an old generation under
// `baton run`: stop accepting, close Exit.
func (u *Upgrader) drainForSupervisor() {
	u.mu.Lock()
	if u.stopped || u.handedOver {
		u.mu.Unlock()
		return
	}
	u.mu.Unlock()
	u.log.Info("the supervisor switched to a new generation; draining")
	u.handover()
}

// envDrainSignal carries the supervisor's drain signal (its number).
const envDrainSignal = contract.EnvDrainSignal

// watchDrainSignal makes the supervisor's drain signal drain this
// generation as a handover does (Exit is closed). The supervisor uses it
// when the link is gone (refused, or closed after a failed exchange); an
// app that waits only for Exit, as the quickstart does, must then drain,
// not die of the signal's default action.
func (u *Upgrader) watchDrainSignal() (stop func()) {
	n, err := strconv.Atoi(os.Getenv(envDrainSignal))
	if err != nil || n <= 0 {
		return func() {}
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.Signal(n))
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-c:
				u.drainForSupervisor()
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(c); close(done) }
}

// closeLink ends the supervisor link (Stop).
func (u *Upgrader) closeLink() {
	if u.link != nil {
		_ = u.link.Close()
	}
}
