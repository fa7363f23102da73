package main

import (
	"context"
	"fmt"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/haproxy"
	"github.com/spf13/cobra"
)

// lbWaitPoll is how often baton lb state reads HAProxy while it waits.
const lbWaitPoll = 50 * time.Millisecond

func newLBStateCmd() *cobra.Command {
	var f lbFlags
	var server, state string
	var wait, force bool
	c := &cobra.Command{
		Use:   "state --haproxy ADDR --backend B --server S --set ready|drain|maint",
		Short: "Take a server out of rotation (maint, drain) or put it back (ready), and wait",
		Long: `Set the administrative state of server S, for deploying a new release to
it while the other server serves:

  maint   no traffic, health checks stopped: waits until S has no session
          left, then its instance can be stopped and replaced
  drain   no new traffic, health checks go on: waits until S has no
          session left
  ready   back in rotation with the weight it has (0 after a switch away
          from it: it takes no traffic until a switch or a canary gives it
          some): waits until its health check passes (up, no failed check)

--wait=false returns at once. Taking the only server that takes traffic
out of rotation is refused unless --force: switch or roll back first.

` + lbHelp + `

Examples:
  baton lb state --haproxy /run/haproxy/admin.sock --backend app --server green --set maint
  baton lb state --haproxy /run/haproxy/admin.sock --backend app --server green --set ready --timeout 5m

` + lbExitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st := haproxy.State(state)
			switch st {
			case haproxy.Ready, haproxy.Drain, haproxy.Maint:
			default:
				return &exitError{code: contract.CodeUsage, err: fmt.Errorf("--set %q: ready, drain or maint", state)}
			}
			o, err := newLBOp(cmd, f, "state")
			if err != nil {
				return err
			}
			defer o.close()
			o.rep.Server, o.rep.State = server, state
			return o.setState(server, st, wait, force)
		},
	}
	f.add(c, 2*time.Minute)
	c.Flags().StringVar(&server, "server", "", "the server (required)")
	c.Flags().StringVar(&state, "set", "", "the state: ready, drain or maint (required)")
	c.Flags().BoolVar(&wait, "wait", true, "wait until a server set ready is healthy, or one set drain or maint has no session (at most --timeout)")
	c.Flags().BoolVar(&force, "force", false, "take the server out of rotation even if no other server takes traffic")
	_ = c.MarkFlagRequired("server")
	_ = c.MarkFlagRequired("set")
	return c
}

func (o *lbOp) setState(server string, st haproxy.State, wait, force bool) error {
	backend := o.f.backend
	all, err := o.lb.Servers(o.ctx, backend)
	if err != nil {
		return o.fail(err)
	}
	var found bool
	others := 0 // servers other than this one that take traffic
	for _, s := range all {
		if s.Name == server {
			found = true
		} else if takesTraffic(s) {
			others++
		}
	}
	if !found {
		return o.fail(fmt.Errorf("%w: %s/%s", haproxy.ErrNoServer, backend, server))
	}
	if st != haproxy.Ready && others == 0 && !force {
		o.rep.Servers = lbServers(all)
		return o.failCode(contract.CodeFailed, fmt.Errorf("refused: no other server of %s takes traffic, %s would leave HAProxy none (switch or roll back first, or --force)", backend, st))
	}
	if err := o.lb.SetState(o.ctx, backend, server, st); err != nil {
		return o.fail(err)
	}
	if !wait {
		o.snapshot()
		return o.done(fmt.Sprintf("%s/%s set %s", backend, server, st))
	}
	what, cond := "no session left", func(s haproxy.Server) bool { return s.Sessions == 0 }
	if st == haproxy.Ready {
		what, cond = "healthy", func(s haproxy.Server) bool { return s.Healthy() || s.Status == "no check" }
	}
	start := time.Now()
	last, err := o.waitServer(server, cond)
	o.snapshot()
	if err != nil {
		return o.fail(fmt.Errorf("%s/%s set %s, but not %s: %w (now %s, %d sessions, check %s %s)",
			backend, server, st, what, err, last.Status, last.Sessions, last.CheckStatus, last.CheckDesc))
	}
	if st == haproxy.Ready && last.Status == "no check" {
		o.rep.Warnings = append(o.rep.Warnings, fmt.Sprintf("%s has no health check: its health is unknown (a switch or canary to it is refused)", server))
	}
	return o.done(fmt.Sprintf("%s/%s set %s, %s after %v", backend, server, st, what, time.Since(start).Round(time.Millisecond)))
}

// waitServer reads server until cond holds (nil) or the command's
// context ends (its cause); it returns the server as last read.
func (o *lbOp) waitServer(server string, cond func(haproxy.Server) bool) (haproxy.Server, error) {
	tick := time.NewTicker(lbWaitPoll)
	defer tick.Stop()
	var last haproxy.Server
	for {
		s, err := o.lb.Server(o.ctx, o.f.backend, server)
		if err == nil {
			last = s
			if cond(s) {
				return s, nil
			}
		} else if o.ctx.Err() == nil {
			return last, err
		}
		select {
		case <-o.ctx.Done():
			return last, context.Cause(o.ctx)
		case <-tick.C:
		}
	}
}
