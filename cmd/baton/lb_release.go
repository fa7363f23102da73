package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/haproxy"
	"github.com/spf13/cobra"
)

// baton lb switch, promote, canary and rollback.

const lbExitCodesHelp = `Exit codes:
  0  success
  1  the operation failed; the message (and --json's code) says where new
     traffic goes: failed (refused, nothing changed), rolled_back (the new
     server failed its health check after the switch: all new traffic is back
     on the old one), timeout (the old server still had sessions at
     --drain-timeout, or --timeout passed), canceled (interrupted)
  2  usage error: bad flags, no such backend or server, a server without a
     health check
  3  HAProxy's runtime API cannot be reached (unreachable), or does not allow
     admin commands to this user (forbidden)`

// lbSwitchFlags tune a switch or a promote.
type lbSwitchFlags struct {
	drainTimeout, watch time.Duration
}

func (sf *lbSwitchFlags) add(c *cobra.Command) {
	c.Flags().DurationVar(&sf.drainTimeout, "drain-timeout", haproxy.DefaultDrainTimeout, "how long the old server's sessions (requests in flight) may take to end")
	c.Flags().DurationVar(&sf.watch, "watch", 0, "after the switch, keep watching the new server's health check this long at least (its first failure puts all traffic back); 0: only while the old server drains")
}

func newLBSwitchCmd() *cobra.Command {
	var f lbFlags
	var sf lbSwitchFlags
	var from, to string
	c := &cobra.Command{
		Use:   "switch --haproxy ADDR --backend B --from S1 --to S2 [--drain-timeout D] [--watch D]",
		Short: "Blue/green: give server S2 all new traffic and drain S1; put it back if S2 fails a health check",
		Long: `Blue/green switch of backend B from server S1 to server S2:

  1. S2 must be healthy (up, no failed check since it came up); otherwise
     nothing is changed and the command fails (code failed).
  2. S2 gets weight 100 and state ready, then S1 weight 0 and state drain,
     in that order: the backend always has a server with weight.
  3. The command waits until S1 has no session left (requests it took
     before the switch finish there), at most --drain-timeout, and at least
     --watch, reading HAProxy every 25 ms.
  4. If S2 fails a single health check meanwhile (before HAProxy takes it
     out after "fall" failures), S1 gets its weight back and state ready,
     S2 weight 0, and the command exits 1 with code rolled_back.

` + lbHelp + `

Examples:
  baton lb switch --haproxy /run/haproxy/admin.sock --backend app --from blue --to green
  baton lb switch --haproxy /run/haproxy/admin.sock --backend app --from blue --to green --watch 30s --json

` + lbExitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := newLBOp(cmd, f, "switch")
			if err != nil {
				return err
			}
			defer o.close()
			o.rep.From, o.rep.To = from, to
			return o.switchTo(from, to, sf, "switched")
		},
	}
	f.add(c, 0)
	sf.add(c)
	c.Flags().StringVar(&from, "from", "", "the server that has the traffic now (required)")
	c.Flags().StringVar(&to, "to", "", "the server to give all new traffic (required)")
	_ = c.MarkFlagRequired("from")
	_ = c.MarkFlagRequired("to")
	return c
}

func newLBPromoteCmd() *cobra.Command {
	var f lbFlags
	var sf lbSwitchFlags
	var pair lbPair
	c := &cobra.Command{
		Use:   "promote --haproxy ADDR --backend B --stable S1 --canary S2 [--drain-timeout D] [--watch D]",
		Short: "Give the canary S2 all new traffic and drain the stable server S1 (a switch)",
		Long: `End a canary release by giving the canary S2 all new traffic: exactly
baton lb switch --from S1 --to S2 (S2 must be healthy; S1 drains; a failed
health check of S2 while S1 drains, or during --watch, puts all traffic back
on S1 and exits 1 with code rolled_back).

` + lbHelp + `

Example:
  baton lb promote --haproxy /run/haproxy/admin.sock --backend app --stable blue --canary green

` + lbExitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := newLBOp(cmd, f, "promote")
			if err != nil {
				return err
			}
			defer o.close()
			o.rep.Stable, o.rep.Canary, o.rep.From, o.rep.To = pair.stable, pair.canary, pair.stable, pair.canary
			return o.switchTo(pair.stable, pair.canary, sf, "promoted")
		},
	}
	f.add(c, 0)
	sf.add(c)
	pair.add(c)
	return c
}

// switchTo runs a switch from server from to server to and reports it;
// done is the summary's verb.
func (o *lbOp) switchTo(from, to string, sf lbSwitchFlags, done string) error {
	rep, err := o.lb.Switch(o.ctx, o.f.backend, from, to, haproxy.SwitchOptions{DrainTimeout: sf.drainTimeout, Watch: sf.watch})
	sw := &lbSwitch{Refused: rep.Refused, RolledBack: rep.RolledBack, SessionsAtSwitch: rep.SessionsAtSwitch,
		SessionsLeft: rep.SessionsLeft, FromWeight: rep.FromWeight}
	if !rep.Switched.IsZero() {
		sw.SwitchedAfter = rep.Switched.Sub(rep.Started)
	}
	if !rep.Drained.IsZero() {
		sw.DrainedAfter = rep.Drained.Sub(rep.Switched)
	}
	o.rep.Switch = sw
	o.snapshot()
	if err != nil {
		code := lbCode(err)
		switch {
		case rep.RolledBack && errors.Is(err, haproxy.ErrUnhealthy):
			code = contract.CodeRolledBack
		case rep.RolledBack:
			err = fmt.Errorf("%w\nall new traffic is back on %s", err, from)
		case rep.Refused:
			err = fmt.Errorf("%w\nnothing was changed: %s keeps its traffic", err, from)
		case !rep.Switched.IsZero() && !errors.Is(err, haproxy.ErrDrainTimeout):
			err = fmt.Errorf("%w\nthe switch was made: %s has all new traffic, %s had %d sessions left (see baton lb status)", err, to, from, rep.SessionsLeft)
		}
		return o.failCode(code, err)
	}
	drained := "had no session at the switch"
	if rep.SessionsAtSwitch > 0 {
		drained = fmt.Sprintf("drained %v after the switch (%d sessions at the switch)", sw.DrainedAfter.Round(time.Millisecond), rep.SessionsAtSwitch)
	}
	watched := ""
	if sf.watch > 0 {
		watched = fmt.Sprintf("; %s stayed healthy for %v", to, time.Since(rep.Switched).Round(time.Millisecond))
	}
	return o.done(fmt.Sprintf("%s %s from %s to %s: %s has all new traffic (weights moved in %v); %s %s%s",
		done, o.f.backend, from, to, to, sw.SwitchedAfter.Round(time.Millisecond), from, drained, watched))
}

// lbPair is the --stable and --canary flags.
type lbPair struct{ stable, canary string }

func (p *lbPair) add(c *cobra.Command) {
	c.Flags().StringVar(&p.stable, "stable", "", "the server of the release that serves now (required)")
	c.Flags().StringVar(&p.canary, "canary", "", "the server of the new release (required)")
	_ = c.MarkFlagRequired("stable")
	_ = c.MarkFlagRequired("canary")
}

func newLBCanaryCmd() *cobra.Command {
	var f lbFlags
	var pair lbPair
	var pct int
	c := &cobra.Command{
		Use:   "canary --haproxy ADDR --backend B --stable S1 --canary S2 --weight P",
		Short: "Give the canary S2 P percent of new traffic and the stable server S1 the rest",
		Long: `Share backend B's new traffic between the stable server S1 and the canary
S2: S2 gets weight P and S1 weight 100-P (so P is the canary's percentage,
request by request with http-server-close), both in state ready unless
their weight is 0. The canary must be healthy to get a share; otherwise
nothing is changed and the command fails. The weight that grows is set
first, so the backend always has a server with weight. Run it again to
change the share; finish with baton lb promote or baton lb rollback.

HAProxy itself stops sending to a canary whose checks fail ("fall" in a
row); baton lb rollback takes it out at once.

` + lbHelp + `

Examples:
  baton lb canary --haproxy /run/haproxy/admin.sock --backend app --stable blue --canary green --weight 10
  baton lb canary --haproxy /run/haproxy/admin.sock --backend app --stable blue --canary green --weight 50

` + lbExitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("weight") || pct < 0 || pct > 100 {
				return &exitError{code: contract.CodeUsage, err: fmt.Errorf("--weight P: the canary's share of new traffic, 0 to 100 (percent)")}
			}
			o, err := newLBOp(cmd, f, "canary")
			if err != nil {
				return err
			}
			defer o.close()
			o.rep.Stable, o.rep.Canary, o.rep.Weight = pair.stable, pair.canary, &pct
			if err := o.lb.Canary(o.ctx, f.backend, pair.stable, pair.canary, pct); err != nil {
				o.snapshot()
				if errors.Is(err, haproxy.ErrUnhealthy) {
					err = fmt.Errorf("%w\nnothing was changed", err)
				}
				return o.fail(err)
			}
			o.snapshot()
			share := func(name string) int {
				for _, s := range o.rep.Servers {
					if s.Name == name {
						return s.Share
					}
				}
				return -1
			}
			if got := share(pair.canary); got >= 0 && got != pct {
				o.rep.Warnings = append(o.rep.Warnings, fmt.Sprintf("%s has %d%% of new traffic, not %d%%: %s or other servers of %s take traffic otherwise (see the table)",
					pair.canary, got, pct, pair.stable, f.backend))
			}
			return o.done(fmt.Sprintf("canary %s of %s: weight %d (%d%% of new traffic), %s weight %d", pair.canary, f.backend, pct, pct, pair.stable, 100-pct))
		},
	}
	f.add(c, 30*time.Second)
	pair.add(c)
	c.Flags().IntVar(&pct, "weight", 0, "the canary's weight: its percentage of new traffic, 0-100 (the stable server gets 100-P)")
	return c
}

func newLBRollbackCmd() *cobra.Command {
	var f lbFlags
	var pair lbPair
	c := &cobra.Command{
		Use:   "rollback --haproxy ADDR --backend B --stable S1 --canary S2",
		Short: "Give the stable server S1 all new traffic at once; the canary S2 drains",
		Long: `Roll a canary (or a switch) back at once: S1 gets weight 100 and state
ready, then S2 weight 0 and state drain. Nothing is checked first: this is
the way back whatever state S2 is in. Requests in flight on S2 finish
there; the command does not wait for them (baton lb status shows S2's
sessions, baton lb state --set maint waits for them).

A warning is printed (and the command still succeeds) when S1 is not up.

` + lbHelp + `

Example:
  baton lb rollback --haproxy /run/haproxy/admin.sock --backend app --stable blue --canary green

` + lbExitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := newLBOp(cmd, f, "rollback")
			if err != nil {
				return err
			}
			defer o.close()
			o.rep.Stable, o.rep.Canary = pair.stable, pair.canary
			err = o.lb.Canary(o.ctx, f.backend, pair.stable, pair.canary, 0)
			if err == nil {
				err = o.lb.SetState(o.ctx, f.backend, pair.canary, haproxy.Drain)
			}
			all := o.snapshot()
			if err != nil {
				return o.fail(fmt.Errorf("rollback of %s to %s: %w (see baton lb status)", f.backend, pair.stable, err))
			}
			canarySessions := 0
			for _, s := range all {
				switch {
				case s.Name == pair.stable && !s.Up() && s.Status != "no check":
					o.rep.Warnings = append(o.rep.Warnings, fmt.Sprintf("%s, which now has the new traffic, is %s (check %s %s)", s.Name, s.Status, s.CheckStatus, s.CheckDesc))
				case s.Name == pair.canary:
					canarySessions = s.Sessions
				}
			}
			return o.done(fmt.Sprintf("rolled back %s: %s has all new traffic; %s drains (%d sessions in flight)", f.backend, pair.stable, pair.canary, canarySessions))
		},
	}
	f.add(c, 30*time.Second)
	pair.add(c)
	return c
}
