package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/haproxy"
	"github.com/spf13/cobra"
)

// baton lb: the weight commands of proxy mode (upgrade, weight, promote,
// rollback) for instances on different hosts behind an existing HAProxy,
// driven through its runtime API (internal/haproxy).

const lbHelp = `The runtime API must be enabled at admin level, on a unix socket or a TCP
address of a trusted network (it has no authentication of its own):

  global
      stats socket /run/haproxy/admin.sock mode 600 level admin

and every server of the backend needs an HTTP health check ("check" on
its server line, with "option httpchk"): baton decides from it whether an
instance may take traffic, and puts traffic back when one starts failing.
docs/haproxy.md has a complete configuration.

--haproxy takes a socket path (/run/haproxy/admin.sock, unix:PATH) or
host:port (127.0.0.1:9999, ipv4@HOST:PORT). Server names are HAProxy's.`

func newLBCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "lb",
		Short: "Blue/green and canary releases between hosts, through HAProxy's runtime API",
		Long: `Steer an existing HAProxy load balancer in front of instances on different
hosts, with the operations baton run --proxy offers on one host: switch all
new traffic to a new instance (blue/green), give it a share (canary),
promote it, or roll back at once. Requests in flight finish where they
started: the instance that leaves is drained, not cut.

` + lbHelp + `

A release, with blue serving and green idle at weight 0:

  H="--haproxy /run/haproxy/admin.sock --backend app"
  baton lb status   $H
  baton lb state    $H --server green --set maint     # out of rotation, wait for its sessions to end
  # ... deploy the new version on green's host and start it ...
  baton lb state    $H --server green --set ready     # back in rotation (weight 0), wait until healthy
  baton lb canary   $H --stable blue --canary green --weight 10
  baton lb promote  $H --stable blue --canary green   # or: baton lb rollback $H --stable blue --canary green

or, without a canary: baton lb switch $H --from blue --to green --watch 30s

` + lbExitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &exitError{code: contract.CodeUsage, err: fmt.Errorf("baton lb needs a subcommand: status, switch, canary, promote, rollback or state\nsee 'baton lb --help'")}
		},
	}
	c.AddCommand(newLBStatusCmd(), newLBSwitchCmd(), newLBCanaryCmd(), newLBPromoteCmd(), newLBRollbackCmd(), newLBStateCmd())
	return c
}

// lbFlags are the flags every baton lb subcommand takes.
type lbFlags struct {
	addr, backend string
	json          bool
	timeout       time.Duration // 0: the subcommand has no overall bound
}

func (f *lbFlags) add(c *cobra.Command, defTimeout time.Duration) {
	c.Flags().StringVar(&f.addr, "haproxy", "", "HAProxy's runtime API: a unix socket path or host:port (required)")
	c.Flags().StringVar(&f.backend, "backend", "", "the HAProxy backend whose servers are steered (required)")
	c.Flags().BoolVar(&f.json, "json", false, "print the outcome as JSON on stdout")
	if defTimeout > 0 {
		c.Flags().DurationVar(&f.timeout, "timeout", defTimeout, "give up after this long")
	}
	_ = c.MarkFlagRequired("haproxy")
	_ = c.MarkFlagRequired("backend")
}

// lbReport is what every baton lb subcommand prints with --json.
type lbReport struct {
	HAProxy string `json:"haproxy"`
	Backend string `json:"backend"`
	Op      string `json:"op"`
	OK      bool   `json:"ok"`
	Code    string `json:"code,omitempty"`
	Error   string `json:"error,omitempty"`
	// switch and promote
	From   string    `json:"from,omitempty"`
	To     string    `json:"to,omitempty"`
	Switch *lbSwitch `json:"switch,omitempty"`
	// canary, promote and rollback
	Stable string `json:"stable,omitempty"`
	Canary string `json:"canary,omitempty"`
	Weight *int   `json:"weight,omitempty"` // canary: the canary's weight (percent of new traffic)
	// state
	Server string `json:"server,omitempty"`
	State  string `json:"state,omitempty"`
	// Warnings: the operation was done, but something needs a look (e.g.
	// the server given all traffic by a rollback is not up).
	Warnings []string `json:"warnings,omitempty"`
	// Servers is the backend as HAProxy shows it after the operation.
	Servers []lbServer    `json:"servers,omitempty"`
	Took    time.Duration `json:"took_ns"`
}

// lbSwitch tells what a switch (or promote) did.
type lbSwitch struct {
	// Refused: the new server was not healthy; nothing was changed.
	Refused bool `json:"refused"`
	// RolledBack: the new server failed a health check after the switch
	// (or a command of the switch failed) and the old one has all new
	// traffic again.
	RolledBack bool `json:"rolled_back"`
	// SwitchedAfter: from the start to both weights changed; 0 if they
	// were not.
	SwitchedAfter time.Duration `json:"switched_after_ns,omitempty"`
	// DrainedAfter: from the switch to the old server without sessions;
	// 0 if it did not drain.
	DrainedAfter     time.Duration `json:"drained_after_ns,omitempty"`
	SessionsAtSwitch int           `json:"sessions_at_switch"`
	SessionsLeft     int           `json:"sessions_left"`
	// FromWeight: the old server's weight before the switch (what a
	// roll-back gives it again).
	FromWeight int `json:"from_weight"`
}

// lbServer is one server of the backend.
type lbServer struct {
	Name    string `json:"name"`
	Addr    string `json:"addr,omitempty"`
	Status  string `json:"status"` // HAProxy's: UP, UP 1/3, DOWN, DRAIN, MAINT, no check ...
	Weight  int    `json:"weight"`
	Share   int    `json:"share_pct"` // of new traffic: weight over the weights of the servers that take traffic
	Health  string `json:"health"`    // healthy, failing (up, a check failed), down, unchecked, maint
	Healthy bool   `json:"healthy"`
	// Sessions: current sessions (requests in flight with
	// http-server-close); TotalSessions since HAProxy started.
	Sessions      int    `json:"sessions"`
	TotalSessions int64  `json:"total_sessions"`
	CheckStatus   string `json:"check_status,omitempty"`
	CheckDesc     string `json:"check_desc,omitempty"`
}

// lbOp is one run of a baton lb subcommand: its client, its report, and
// the context bounding it (interrupted by Ctrl-C or SIGTERM).
type lbOp struct {
	f      lbFlags
	out    io.Writer
	errOut io.Writer
	lb     *haproxy.Client
	rep    lbReport
	start  time.Time
	ctx    context.Context
	cancel context.CancelFunc
}

func newLBOp(cmd *cobra.Command, f lbFlags, op string) (*lbOp, error) {
	o := &lbOp{f: f, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr(), start: time.Now(),
		rep: lbReport{HAProxy: f.addr, Backend: f.backend, Op: op}}
	lb, err := haproxy.New(f.addr)
	if err != nil {
		return nil, o.fail(fmt.Errorf("--haproxy: %w", err))
	}
	o.lb = lb
	o.rep.HAProxy = lb.String()
	if !f.json {
		// The steps of a switch as they happen (it may watch for a while).
		lb.Logger = slog.New(slog.NewTextHandler(o.errOut, &slog.HandlerOptions{ReplaceAttr: dropTime}))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	o.ctx, o.cancel = ctx, stop
	if f.timeout > 0 {
		var cancel context.CancelFunc
		o.ctx, cancel = context.WithTimeoutCause(ctx, f.timeout, fmt.Errorf("%w (--timeout %v)", context.DeadlineExceeded, f.timeout))
		o.cancel = func() { cancel(); stop() }
	}
	return o, nil
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

func (o *lbOp) close() {
	if o.cancel != nil {
		o.cancel()
	}
}

// snapshot reads the backend's servers into the report (best effort: the
// operation's own outcome matters more than a failed read after it).
func (o *lbOp) snapshot() []haproxy.Server {
	ctx, cancel := context.WithTimeout(context.Background(), haproxy.DefaultTimeout)
	defer cancel()
	all, err := o.lb.Servers(ctx, o.f.backend)
	if err != nil {
		return nil
	}
	o.rep.Servers = lbServers(all)
	return all
}

// done reports success: the JSON report, or the backend as a table after
// the summary lines.
func (o *lbOp) done(summary ...string) error {
	o.rep.OK, o.rep.Took = true, time.Since(o.start)
	if o.f.json {
		printJSON(o.out, o.rep)
		return nil
	}
	for _, l := range summary {
		fmt.Fprintln(o.out, l)
	}
	for _, w := range o.rep.Warnings {
		fmt.Fprintln(o.errOut, "baton: warning:", w)
	}
	printLBServers(o.out, o.rep.Servers)
	return nil
}

// fail reports err with the code lbCode gives it.
func (o *lbOp) fail(err error) error { return o.failCode(lbCode(err), err) }

func (o *lbOp) failCode(code string, err error) error {
	o.rep.OK, o.rep.Code, o.rep.Error, o.rep.Took = false, code, err.Error(), time.Since(o.start)
	if o.f.json {
		printJSON(o.out, o.rep)
		return &exitError{code: code, err: errReported}
	}
	return &exitError{code: code, err: fmt.Errorf("lb %s failed (%s): %w", o.rep.Op, code, err)}
}

// lbCode maps an error of internal/haproxy (or of the context) to a
// contract code: a wrong flag, backend or server name, or a server
// without a health check is a usage error (2); HAProxy unreachable is
// unreachable (3), a socket without "level admin" or that this user may
// not open forbidden (3); a deadline or an interrupt that ended the
// command timeout or canceled (1); anything else, including HAProxy
// refusing a command and an unhealthy server, failed (1). A switch whose
// new server failed its health check is rolled_back (1), decided by the
// caller that knows the roll-back happened.
func lbCode(err error) string {
	switch {
	case errors.Is(err, haproxy.ErrInvalid), errors.Is(err, haproxy.ErrNoBackend),
		errors.Is(err, haproxy.ErrNoServer), errors.Is(err, haproxy.ErrNoCheck):
		return contract.CodeUsage
	case errors.Is(err, context.Canceled): // interrupted, whatever it cut short
		return contract.CodeCanceled
	case errors.Is(err, haproxy.ErrPermission):
		return contract.CodeForbidden
	case errors.Is(err, haproxy.ErrSocket):
		return contract.CodeUnreachable
	case errors.Is(err, haproxy.ErrDrainTimeout), errors.Is(err, context.DeadlineExceeded):
		return contract.CodeTimeout
	}
	return contract.CodeFailed
}

// lbServers turns HAProxy's view into the report's, with each server's
// share of new traffic.
func lbServers(all []haproxy.Server) []lbServer {
	total := 0
	for _, s := range all {
		if takesTraffic(s) {
			total += s.Weight
		}
	}
	out := make([]lbServer, 0, len(all))
	for _, s := range all {
		ls := lbServer{Name: s.Name, Addr: s.Addr, Status: s.Status, Weight: s.Weight, Health: health(s), Healthy: s.Healthy(),
			Sessions: s.Sessions, TotalSessions: s.TotalSessions, CheckStatus: s.CheckStatus, CheckDesc: s.CheckDesc}
		if takesTraffic(s) && total > 0 {
			ls.Share = (200*s.Weight + total) / (2 * total) // rounded
		}
		out = append(out, ls)
	}
	return out
}

// takesTraffic reports whether HAProxy sends new requests to s by its
// weight: up (or not checked), neither drained nor in maintenance.
func takesTraffic(s haproxy.Server) bool {
	if s.Weight <= 0 || s.Draining() || s.InMaint() || strings.HasPrefix(s.Status, "NOLB") {
		return false
	}
	return s.Up() || s.Status == "no check"
}

func health(s haproxy.Server) string {
	switch {
	case s.InMaint():
		return "maint"
	case !s.HasCheck():
		return "unchecked"
	case s.Healthy():
		return "healthy"
	case s.Up():
		return "failing"
	}
	return "down"
}

func printLBServers(out io.Writer, servers []lbServer) {
	if len(servers) == 0 {
		return
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tADDRESS\tSTATUS\tWEIGHT\tSHARE\tHEALTH\tSESSIONS\tTOTAL\tCHECK")
	for _, s := range servers {
		check := s.CheckStatus
		if !s.Healthy && s.CheckDesc != "" {
			check += " (" + s.CheckDesc + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d%%\t%s\t%d\t%d\t%s\n", s.Name, s.Addr, s.Status, s.Weight, s.Share, s.Health, s.Sessions, s.TotalSessions, check)
	}
	tw.Flush()
}

func newLBStatusCmd() *cobra.Command {
	var f lbFlags
	c := &cobra.Command{
		Use:   "status --haproxy ADDR --backend B",
		Short: "Show the backend's servers: weight, share of new traffic, state, health, sessions",
		Long: `Show every server of backend B as HAProxy sees it: address, status (UP,
DOWN, DRAIN, MAINT; "UP 1/3" is up with a failed check), weight and the
share of new traffic it gives, health (healthy, failing, down, unchecked,
maint), current sessions (requests in flight with http-server-close),
sessions since HAProxy started, and the last health check.

` + lbHelp + `

Example:
  baton lb status --haproxy /run/haproxy/admin.sock --backend app
  baton lb status --haproxy 10.0.0.2:9999 --backend app --json

` + lbExitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := newLBOp(cmd, f, "status")
			if err != nil {
				return err
			}
			defer o.close()
			all, err := o.lb.Servers(o.ctx, f.backend)
			if err == nil && len(all) == 0 {
				err = fmt.Errorf("%w: %s has no servers (is it a frontend?)", haproxy.ErrNoServer, f.backend)
			}
			if err != nil {
				return o.fail(err)
			}
			o.rep.Servers = lbServers(all)
			return o.done(fmt.Sprintf("backend %s on %s", f.backend, o.lb))
		},
	}
	f.add(c, 30*time.Second)
	return c
}
