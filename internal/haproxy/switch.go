package haproxy

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Defaults of SwitchOptions.
const (
	DefaultSwitchWeight = 100
	DefaultDrainTimeout = 30 * time.Second
	DefaultPoll         = 25 * time.Millisecond
)

// SwitchOptions tune Switch. The zero value is usable.
type SwitchOptions struct {
	// Weight given to the new server; 0 means DefaultSwitchWeight.
	Weight int
	// Watch is how long, at least, the new server must stay healthy
	// after the switch before Switch returns (it watches the whole drain
	// anyway); 0 means only the drain.
	Watch time.Duration
	// DrainTimeout bounds the wait for the old server's sessions to end;
	// 0 means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Poll is how often the servers are read while watching. It must be
	// well under (fall-1) × the check interval: a failed check is seen,
	// and the traffic put back, before HAProxy takes the new server out
	// after its fall-th failure. 0 means DefaultPoll.
	Poll time.Duration
}

// SwitchReport tells what Switch did.
type SwitchReport struct {
	Backend, From, To string
	Started           time.Time
	// Switched is when both weights had been changed (zero if refused).
	Switched time.Time
	// Drained is when the old server's sessions reached 0 (zero if not).
	Drained time.Time
	// SessionsAtSwitch is the old server's current sessions right after
	// the switch; SessionsLeft its sessions when Switch returned.
	SessionsAtSwitch, SessionsLeft int
	// Refused: the new server was not healthy, nothing was changed.
	Refused bool
	// RolledBack: the new server failed a health check after the switch
	// and the old one was given all the traffic again.
	RolledBack bool
	// FromWeight is the old server's weight before the switch (given back
	// on a roll-back).
	FromWeight int
	// ToServer is the new server as last read (status, check result).
	ToServer Server
}

// Switch moves all new traffic of backend from server from to server to
// (blue/green): it checks that to passes its health check (else
// ErrUnhealthy, nothing changed), gives to the weight opts.Weight and
// state ready, then from weight 0 and state drain (in that order: the
// backend never has no weight), and waits until from has no session left
// (bounded by opts.DrainTimeout: ErrDrainTimeout) and at least opts.Watch
// has passed. If to fails a single health check meanwhile, from gets its
// weight back and state ready, to gets weight 0, and Switch returns
// ErrUnhealthy with RolledBack set. The report is filled in every case.
func (c *Client) Switch(ctx context.Context, backend, from, to string, opts SwitchOptions) (SwitchReport, error) {
	rep := SwitchReport{Backend: backend, From: from, To: to, Started: time.Now()}
	if err := checkNames(backend, from); err != nil {
		return rep, err
	}
	if err := checkName("server", to); err != nil {
		return rep, err
	}
	if from == to {
		return rep, fmt.Errorf("%w: switch from %s to itself", ErrInvalid, from)
	}
	if opts.Weight == 0 {
		opts.Weight = DefaultSwitchWeight
	}
	if opts.Weight < 1 || opts.Weight > MaxWeight {
		return rep, fmt.Errorf("%w: weight %d (1..%d)", ErrInvalid, opts.Weight, MaxWeight)
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	if opts.Poll <= 0 {
		opts.Poll = DefaultPoll
	}
	log := c.log().With("backend", backend, "from", from, "to", to)

	fs, ts, err := c.pair(ctx, backend, from, to)
	if err != nil {
		return rep, err
	}
	rep.ToServer, rep.FromWeight = ts, fs.Weight
	if err := healthyForTraffic(ts); err != nil {
		rep.Refused = true
		log.Info("switch refused", "to_status", ts.Status, "check", ts.CheckStatus)
		return rep, err
	}

	// From here on, a failure leaves traffic on from where possible.
	steps := []func() error{
		func() error { return c.SetWeight(ctx, backend, to, opts.Weight) },
		func() error { return c.SetState(ctx, backend, to, Ready) },
		func() error { return c.SetWeight(ctx, backend, from, 0) },
		func() error { return c.SetState(ctx, backend, from, Drain) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			rbErr := c.rollBack(backend, from, to, rep.FromWeight)
			rep.RolledBack = rbErr == nil
			return rep, errors.Join(fmt.Errorf("switch %s/%s -> %s: %w", backend, from, to, err), rbErr)
		}
	}
	rep.Switched = time.Now()
	log.Info("switched", "weight", opts.Weight)

	tick := time.NewTicker(opts.Poll)
	defer tick.Stop()
	drainBy := rep.Switched.Add(opts.DrainTimeout)
	watchUntil := rep.Switched.Add(opts.Watch)
	first := true
	for {
		fs, ts, err := c.pair(ctx, backend, from, to)
		if err != nil {
			return rep, fmt.Errorf("switch %s/%s -> %s: watching: %w", backend, from, to, err)
		}
		rep.ToServer, rep.SessionsLeft = ts, fs.Sessions
		if first {
			rep.SessionsAtSwitch, first = fs.Sessions, false
		}
		if !ts.Healthy() {
			log.Warn("new server failed its health check; rolling back", "to_status", ts.Status, "check", ts.CheckStatus, "desc", ts.CheckDesc)
			if err := c.rollBack(backend, from, to, rep.FromWeight); err != nil {
				return rep, fmt.Errorf("switch %s/%s -> %s: %w (%s %s) and the roll-back failed: %w", backend, from, to, ErrUnhealthy, ts.Status, ts.CheckStatus, err)
			}
			rep.RolledBack = true
			return rep, fmt.Errorf("switch %s/%s -> %s: %w: %s failed its health check after the switch (%s, %s %s); all traffic is back on %s",
				backend, from, to, ErrUnhealthy, to, ts.Status, ts.CheckStatus, ts.CheckDesc, from)
		}
		now := time.Now()
		if fs.Sessions == 0 && rep.Drained.IsZero() {
			rep.Drained = now
			log.Info("old server drained", "took", now.Sub(rep.Switched))
		}
		if !rep.Drained.IsZero() && !now.Before(watchUntil) {
			return rep, nil
		}
		if rep.Drained.IsZero() && now.After(drainBy) {
			return rep, fmt.Errorf("switch %s/%s -> %s: %w: %d sessions on %s after %v (traffic is on %s)",
				backend, from, to, ErrDrainTimeout, fs.Sessions, from, opts.DrainTimeout, to)
		}
		select {
		case <-ctx.Done():
			return rep, fmt.Errorf("switch %s/%s -> %s: switched, then stopped watching: %w", backend, from, to, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// rollBack gives from its weight (at least 1) and state ready, then takes
// to's weight away. It runs even when the caller's context is done.
func (c *Client) rollBack(backend, from, to string, fromWeight int) error {
	if fromWeight <= 0 {
		fromWeight = DefaultSwitchWeight
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*DefaultTimeout)
	defer cancel()
	err := errors.Join(
		c.SetWeight(ctx, backend, from, fromWeight),
		c.SetState(ctx, backend, from, Ready),
		c.SetWeight(ctx, backend, to, 0),
	)
	c.log().Info("rolled back", "backend", backend, "from", from, "weight", fromWeight, "to", to, "err", err)
	return err
}

// pair reads both servers from one `show stat`.
func (c *Client) pair(ctx context.Context, backend, a, b string) (Server, Server, error) {
	all, err := c.Servers(ctx, backend)
	if err != nil {
		return Server{}, Server{}, err
	}
	var sa, sb *Server
	for i := range all {
		switch all[i].Name {
		case a:
			sa = &all[i]
		case b:
			sb = &all[i]
		}
	}
	if len(all) == 0 {
		// show stat names no server: a frontend, or a backend without any.
		return Server{}, Server{}, fmt.Errorf("%w: %s has no servers", ErrNoServer, backend)
	}
	if sa == nil {
		return Server{}, Server{}, fmt.Errorf("%w: %s/%s", ErrNoServer, backend, a)
	}
	if sb == nil {
		return Server{}, Server{}, fmt.Errorf("%w: %s/%s", ErrNoServer, backend, b)
	}
	return *sa, *sb, nil
}

func healthyForTraffic(s Server) error {
	switch {
	case s.InMaint():
		return fmt.Errorf("%w: %s/%s is in maintenance (health checks suspended): set it ready and wait for its checks", ErrUnhealthy, s.Backend, s.Name)
	case !s.HasCheck():
		return fmt.Errorf("%w: %s/%s (add \"check\" to its server line)", ErrNoCheck, s.Backend, s.Name)
	case !s.Healthy():
		return fmt.Errorf("%w: %s/%s is %s (check %s %s)", ErrUnhealthy, s.Backend, s.Name, s.Status, s.CheckStatus, s.CheckDesc)
	}
	return nil
}

// Canary shares backend's new traffic between server stable and server
// canary: canary gets percent (0..100) of it, stable the rest (weights
// 100-percent and percent, so that HAProxy's weighted round robin gives
// each its share request by request with http-server-close). The canary
// must pass its health check when it is to get any traffic (else
// ErrUnhealthy, nothing changed); the server whose weight grows is changed
// first, and both are set ready unless their weight is 0.
func (c *Client) Canary(ctx context.Context, backend, stable, canary string, percent int) error {
	if err := checkNames(backend, stable); err != nil {
		return err
	}
	if err := checkName("server", canary); err != nil {
		return err
	}
	if stable == canary {
		return fmt.Errorf("%w: canary %s is the stable server", ErrInvalid, canary)
	}
	if percent < 0 || percent > 100 {
		return fmt.Errorf("%w: canary percent %d (0..100)", ErrInvalid, percent)
	}
	ss, cs, err := c.pair(ctx, backend, stable, canary)
	if err != nil {
		return err
	}
	if percent > 0 {
		if err := healthyForTraffic(cs); err != nil {
			return fmt.Errorf("canary %s/%s at %d%%: %w", backend, canary, percent, err)
		}
	}
	type change struct {
		name      string
		old, want int
	}
	order := []change{{stable, ss.Weight, 100 - percent}, {canary, cs.Weight, percent}}
	if order[1].want-order[1].old > order[0].want-order[0].old {
		order[0], order[1] = order[1], order[0]
	}
	for _, ch := range order {
		if err := c.SetWeight(ctx, backend, ch.name, ch.want); err != nil {
			return fmt.Errorf("canary %s/%s at %d%%: %w", backend, canary, percent, err)
		}
		if ch.want > 0 {
			if err := c.SetState(ctx, backend, ch.name, Ready); err != nil {
				return fmt.Errorf("canary %s/%s at %d%%: %w", backend, canary, percent, err)
			}
		}
	}
	c.log().Info("canary", "backend", backend, "stable", stable, "canary", canary, "percent", percent)
	return nil
}
