package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/baton-go/baton/internal/canary"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/release"
	"github.com/baton-go/baton/supervisor"
	"github.com/spf13/cobra"
)

type commonFlags struct {
	name    string
	json    bool
	timeout time.Duration
	binary  string // upgrade only
}

func (f *commonFlags) add(c *cobra.Command, defTimeout time.Duration) {
	c.Flags().StringVarP(&f.name, "name", "n", "", "name of the service's control endpoint (required)")
	c.Flags().BoolVar(&f.json, "json", false, "print the outcome as JSON on stdout")
	c.Flags().DurationVar(&f.timeout, "timeout", defTimeout, "give up waiting after this long")
	_ = c.MarkFlagRequired("name")
}

// upgradeReport is what `baton upgrade --json` prints.
type upgradeReport struct {
	Name   string                  `json:"name"`
	OK     bool                    `json:"ok"`
	Code   string                  `json:"code,omitempty"`
	Error  string                  `json:"error,omitempty"`
	Result *contract.UpgradeResult `json:"result,omitempty"`
	Exit   *contract.ExitError     `json:"child_exit,omitempty"`
	Took   time.Duration           `json:"took_ns"`
	// With --binary:
	Installed string           `json:"installed,omitempty"` // the installed path
	Release   *release.Release `json:"release,omitempty"`   // the release installed for this upgrade
	Checks    *release.Report  `json:"checks,omitempty"`
	// DiskRollback is the release put back at the installed path after the
	// upgrade failed.
	DiskRollback *release.Release `json:"disk_rolled_back_to,omitempty"`
}

func newUpgradeCmd() *cobra.Command {
	var f commonFlags
	var sf stageFlags
	var cf canaryFlags
	c := &cobra.Command{
		Use:   "upgrade --name NAME [--binary FILE [checks]] [--canary P | --steps LIST]",
		Short: "Upgrade a running service to the binary on disk, or to a new one after checks",
		Long: `Ask the service NAME to start its binary as it is on disk now, hand it the
listening sockets, wait until it is ready, and drain the old generation.
Prints the new pid and timings, or exactly why the upgrade failed (the old
generation keeps serving then).

With --binary FILE, first run every pre-flight check on FILE (see
baton check: format for this OS and CPU, Go module, --sha256/--checksums,
--pubkey signature, --smoke run, directory safety, free space); a refused
binary changes nothing. Then stage FILE in the releases directory beside the
installed binary (the very copy the checks read), and upgrade to it:

  under baton run, the installed path is switched to the release
  atomically, then the supervisor starts it; if the upgrade fails (the new
  generation exits, never gets ready, or fails its probation), the
  supervisor puts the release that serves back at the installed path;

  a library service is sent the release, and installs, starts and, if the
  upgrade fails, puts the previous release back itself (Upgrader.UpgradeTo,
  holding the releases lock throughout: two deploys cannot interleave).

Either way this command reports what is installed afterwards.

In proxy mode (baton run --proxy) an upgrade switches the proxy's weights:
the new generation takes all new traffic once ready (blue/green), or with
--canary P or --steps LIST a share of it, raised step by step while it does
no worse than the stable generation (--max-error-ratio, --max-p99-ratio over
each --step-interval). A failing step gives the stable generation all
traffic back at once, stops the canary and exits 1 with code canary_failed
and the figures. A plan ending below 100 returns once the canary holds at
its last step: baton promote, baton weight or baton rollback then decide.

` + refusalHelp + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			plan, err := cf.plan(cmd)
			if err != nil {
				return &exitError{code: contract.CodeUsage, err: err}
			}
			if plan != nil && !cmd.Flags().Changed("timeout") {
				// The canary is called off if this command stops waiting
				// before it holds: wait as long as the rollout may take
				// (each step may be extended to wait for evidence).
				f.timeout += time.Duration(len(plan.Steps)) * (canary.DefaultEvidenceFactor + 1) * cf.stepInterval
			}
			return runUpgrade(cmd.OutOrStdout(), f, sf, plan)
		},
	}
	f.add(c, 5*time.Minute)
	c.Flags().StringVar(&f.binary, "binary", "", "check and install this binary first (put back to the previous release if the upgrade fails)")
	sf.add(c, true)
	cf.add(c)
	return c
}

// canaryFlags are baton upgrade's proxy-mode canary flags.
type canaryFlags struct {
	canary        int
	steps         string
	stepInterval  time.Duration
	maxErrorRatio float64
	maxP99Ratio   float64
}

func (cf *canaryFlags) add(c *cobra.Command) {
	f := c.Flags()
	f.IntVar(&cf.canary, "canary", 0, "proxy mode: give the new generation this percentage of new traffic, judged against the stable one for one --step-interval, then wait for baton promote, weight or rollback")
	f.StringVar(&cf.steps, "steps", "", "proxy mode: raise the new generation's share through these percentages (e.g. 1,10,50,100), each judged for --step-interval; ending at 100 completes the upgrade, below it waits for baton promote")
	f.DurationVar(&cf.stepInterval, "step-interval", 30*time.Second, "proxy mode: how long each canary step lasts and is judged (extended, up to 10 times, while the canary has had too few requests to judge); --timeout grows with the steps unless given")
	f.Float64Var(&cf.maxErrorRatio, "max-error-ratio", 0, "proxy mode: the canary's error ratio (5xx and connection errors) may exceed the stable one's by this fraction (default 0.01)")
	f.Float64Var(&cf.maxP99Ratio, "max-p99-ratio", 0, "proxy mode: the canary's p99 latency may be this many times the stable one's (default 1.5)")
}

// plan builds the request's canary plan (nil: a plain upgrade).
func (cf *canaryFlags) plan(c *cobra.Command) (*contract.CanaryPlan, error) {
	changed := func(n string) bool { return c.Flags().Changed(n) }
	if !changed("canary") && !changed("steps") {
		for _, n := range []string{"step-interval", "max-error-ratio", "max-p99-ratio"} {
			if changed(n) {
				return nil, fmt.Errorf("--%s applies to a canary: add --canary P or --steps LIST", n)
			}
		}
		return nil, nil
	}
	if changed("canary") && changed("steps") {
		return nil, errors.New("give either --canary P (one step) or --steps LIST, not both")
	}
	p := &contract.CanaryPlan{StepInterval: cf.stepInterval, MaxErrorRatio: cf.maxErrorRatio, MaxP99Ratio: cf.maxP99Ratio}
	if changed("canary") {
		p.Steps = []int{cf.canary}
	} else {
		steps, err := canary.ParseSteps(cf.steps)
		if err != nil {
			return nil, err
		}
		p.Steps = steps
	}
	if err := supervisor.CheckCanaryPlan(*p); err != nil {
		return nil, err
	}
	return p, nil
}

func runUpgrade(out io.Writer, f commonFlags, sf stageFlags, plan *contract.CanaryPlan) error {
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	start := time.Now()
	rep := upgradeReport{Name: f.name}
	var st *staged
	library := false
	if err := ctl.CheckName(f.name); err != nil {
		return jsonFailure(out, f, &exitError{code: contract.CodeUsage, err: err})
	}
	if f.binary != "" {
		if _, err := os.Stat(f.binary); err != nil {
			return jsonFailure(out, f, &exitError{code: contract.CodeUsage, err: fmt.Errorf("--binary: %w", err)})
		}
		installed, status, err := installedPath(ctx, f.name, sf.path)
		if err != nil {
			if f.json {
				ee := err.(*exitError)
				printJSON(out, map[string]any{"name": f.name, "ok": false, "code": ee.code, "error": ee.err.Error()})
			}
			return err
		}
		rep.Installed = installed
		// A library service installs the release itself (UpgradeTo); the
		// supervisor of baton run upgrades to what is installed.
		library = status != nil && status.Supervisor == nil
		if library {
			st, err = checkAndStage(ctx, sf, installed, f.binary)
		} else {
			st, err = checkAndActivate(ctx, sf, installed, f.binary)
		}
		if st != nil {
			// Released before the upgrade request: whoever restores the
			// previous release after a failure (the supervisor, or the
			// library that holds it during its UpgradeTo) takes it.
			st.store.Unlock()
			rep.Checks = st.report
		}
		if err != nil {
			if ee, ok := err.(*exitError); ok {
				return jsonFailure(out, f, ee)
			}
			rep.Code, rep.Error, rep.Took = contract.CodeOf(err), err.Error(), time.Since(start)
			ee := refusal(err)
			if f.json {
				printJSON(out, rep)
				ee.err = errReported
			} else {
				ee.err = fmt.Errorf("%w\nthe running generation keeps serving", st.failure("upgrade of "+f.name, installed, err))
			}
			return ee
		}
		rep.Release = &st.release
	}
	// A plain upgrade request: the service starts the binary at its
	// installed path (switched above with --binary), so this works with the
	// library and the supervisor alike.
	req := ctl.Request{Op: ctl.OpUpgrade, Canary: plan}
	if library && st != nil {
		req.Binary = st.release.Path // the checked copy, staged
	} else if st != nil {
		req.ExpectSHA256 = st.release.SHA256 // what we installed, not another deploy's
	}
	// On a terminal, the steps as they happen (from the events file);
	// pipes and --json get the output they always had.
	var watch *progressWatch
	if !f.json && isTerminal(out) {
		watch = watchProgress(ctx, newProgress(out, f.name, time.Now()))
	}
	resp, err := ctl.Do(ctx, f.name, req)
	if watch != nil {
		watch.finish(ctx, err == nil && resp.OK)
	}
	if st != nil && library {
		defer pruneReleases(st)
	}
	if err != nil {
		if st != nil && !library && ctl.NotSent(err) {
			// The request never reached the supervisor: nothing was
			// started, put the previous binary back (nobody else knows).
			// (Once it was sent, the service may have started the new
			// binary whatever happened to the answer: the disk is left as
			// is, and the report says so.)
			if prev, rerr := putBackRefused(ctx, st); rerr == nil {
				rep.DiskRollback = prev
			}
		} else if st != nil && !ctl.NotSent(err) {
			err = fmt.Errorf("%w\nthe new release may stay installed at %s (the service may have started it): check with baton status --name %s, or baton rollback", err, rep.Installed, f.name)
		}
		return reportTransport(out, f, err)
	}
	rep.OK, rep.Code, rep.Error, rep.Took = resp.OK, resp.Code, resp.Error, time.Since(start)
	var rollbackErr error
	if !resp.OK && st != nil {
		if !library && !startedAndFailed(resp.Code) {
			// Refused by the supervisor before anything was started: it
			// leaves the disk alone, the release this command installed
			// goes back (not marked failed).
			_, rollbackErr = putBackRefused(ctx, st)
		}
		var stays error
		rep.DiskRollback, stays = installedAfterFailure(st)
		if rollbackErr == nil {
			rollbackErr = stays
		}
	}
	if resp.OK {
		var r contract.UpgradeResult
		if err := resp.Decode(&r); err != nil {
			return &exitError{code: contract.CodeInternal, err: fmt.Errorf("unreadable upgrade result: %w", err)}
		}
		rep.Result = &r
	} else if resp.Code == contract.CodeChildExited && len(resp.Result) > 0 {
		var ce contract.ExitError
		if json.Unmarshal(resp.Result, &ce) == nil {
			rep.Exit = &ce
		}
	}
	if f.json {
		if rollbackErr != nil {
			rep.Error += "; putting the previous binary back failed: " + rollbackErr.Error()
		}
		printJSON(out, rep)
	} else if rep.OK && rep.Result.Canary != nil {
		c := rep.Result.Canary
		fmt.Fprintf(out, "canary of %s: generation %d, pid %d, has %d%% of new traffic; the stable generation the rest\n", f.name, c.Generation, c.PID, c.Weight)
		fmt.Fprintf(out, "decide with: baton promote --name %s | baton weight --name %s --set P | baton rollback --name %s\n", f.name, f.name, f.name)
		if rep.Release != nil {
			fmt.Fprintf(out, "installed release %s at %s (baton rollback puts the previous one back)\n", rep.Release.ID, rep.Installed)
		}
	} else if rep.OK {
		r := rep.Result
		fmt.Fprintf(out, "upgraded %s: generation %d, pid %d, ready after %v", f.name, r.Generation, r.PID, r.ReadyAfter.Round(time.Millisecond))
		if r.AppStartup > 0 { // reported by the baton library only
			fmt.Fprintf(out, " (app start-up %v, baton %v)", r.AppStartup.Round(time.Millisecond), (r.ReadyAfter - r.AppStartup).Round(time.Millisecond))
		}
		fmt.Fprintln(out)
		if rep.Release != nil {
			fmt.Fprintf(out, "installed release %s at %s\n", rep.Release.ID, rep.Installed)
		}
	}
	if rep.OK {
		return nil
	}
	ee := &exitError{code: resp.Code}
	if rollbackErr != nil {
		ee.code = contract.CodeInternal
	}
	if f.json {
		ee.err = errReported
		return ee
	}
	msg := resp.Error
	switch {
	case ee.exit() == exitFailed:
		msg += "\nthe running generation keeps serving"
	case resp.Code == contract.CodeStopped:
		msg += "\nthe request reached a generation that is starting or draining; retry in a moment"
	}
	switch {
	case rollbackErr != nil:
		msg += "\nputting the previous binary back at " + rep.Installed + " FAILED: " + rollbackErr.Error()
	case rep.DiskRollback != nil:
		msg += fmt.Sprintf("\nthe installed binary %s is release %s again", rep.Installed, rep.DiskRollback.ID)
	}
	ee.err = fmt.Errorf("upgrade of %s failed (%s): %s", f.name, resp.Code, msg)
	return ee
}

// jsonFailure prints a failure that happened before any check ran (no
// release store, lock busy, missing file) as JSON with --json, so that
// scripts always get a report on stdout.
func jsonFailure(out io.Writer, f commonFlags, ee *exitError) error {
	if !f.json || ee.err == errReported {
		return ee
	}
	code := ee.code
	if code == "" {
		code = contract.CodeFailed
	}
	printJSON(out, map[string]any{"name": f.name, "ok": false, "code": code, "error": ee.err.Error()})
	return &exitError{code: ee.code, err: errReported}
}

// checkAndStage takes the store lock (the caller unlocks st.store),
// checks file and stages the very copy the checks read, without switching
// the installed path: for a library service, which installs the release
// itself (UpgradeTo). On a refusal nothing is changed.
func checkAndStage(ctx context.Context, f stageFlags, installed, file string) (*staged, error) {
	if _, err := os.Stat(file); err != nil {
		return nil, &exitError{code: contract.CodeUsage, err: err}
	}
	st, err := release.Open(installed, release.StoreOptions{Keep: f.keep, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, &exitError{code: contract.CodeInternal, err: fmt.Errorf("releases directory: %w", err)}
	}
	if err := st.Lock(ctx); err != nil {
		return nil, refusal(err)
	}
	s := &staged{store: st}
	before, _ := release.FileSHA256(installed)
	if s.report, s.release, err = st.CheckAndStage(ctx, file, f.options(installed)); err != nil {
		return s, err
	}
	s.changed = before != s.release.SHA256
	return s, nil
}

// putBackRefused puts the release installed before back at the installed
// path when the supervisor never started st.release (the request did not
// reach it, or it refused it: busy, too many draining...): the supervisor
// restores only what it started. The release is not marked failed.
func putBackRefused(ctx context.Context, st *staged) (*release.Release, error) {
	if !st.changed {
		return nil, nil
	}
	if err := st.store.Lock(ctx); err != nil {
		return nil, err
	}
	defer st.store.Unlock()
	prev, done, err := st.store.PutBack(st.release.SHA256)
	if err != nil || !done {
		return nil, err
	}
	return &prev, nil
}

// installedAfterFailure reads what is installed after a failed upgrade to
// st.release, once whoever restores (the supervisor, the library's
// UpgradeTo, or putBackRefused) has done so: the release installed again,
// or an error when st.release is still installed though it did not take
// over (putting the previous one back failed: the service's log says why).
func installedAfterFailure(st *staged) (*release.Release, error) {
	if !st.changed {
		return nil, nil // the same binary was installed before: nothing to put back
	}
	now, err := release.FileSHA256(st.store.Installed())
	if err != nil {
		return nil, err
	}
	if now == st.release.SHA256 {
		return nil, fmt.Errorf("release %s is still installed though the upgrade failed (see the service's log)", st.release.ID)
	}
	rels, err := st.store.List()
	if err != nil {
		return nil, nil
	}
	for _, r := range rels {
		if r.SHA256 == now {
			return &r, nil
		}
	}
	return nil, nil
}

// pruneReleases removes old releases (--keep) once the library is done
// with them: it held the lock during its upgrade.
func pruneReleases(st *staged) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st.store.Lock(ctx) != nil {
		return
	}
	defer st.store.Unlock()
	st.pruned, _ = st.store.Prune()
}

// startedAndFailed reports whether an upgrade's error code says the new
// binary was started and did not make it (rather than being refused before
// it ran).
func startedAndFailed(code string) bool {
	switch code {
	case contract.CodeChildExited, contract.CodeReadyTimeout, contract.CodeRolledBack, contract.CodeBinary, contract.CodeCanaryFailed:
		return true
	}
	return false
}

// reportTransport reports a failure to talk to the service at all, as JSON
// too when --json was asked for (scripts parse stdout, whatever happened).
func reportTransport(out io.Writer, f commonFlags, err error) error {
	ee := transportError(err)
	if f.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"name": f.name, "ok": false, "code": ee.code, "error": ee.err.Error()})
	}
	return ee
}

// transportError classifies a failure to talk to the service at all (an
// error of ctl.Do): ctl's errors carry their codes (usage for a bad name,
// unreachable when nothing listens, control_protocol for another protocol
// version); a deadline is a timeout (the service may still act); anything
// else means the service could not be reached.
func transportError(err error) *exitError {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &exitError{code: contract.CodeTimeout, err: fmt.Errorf("%w (the service may still finish the operation; check `baton status`)", err)}
	case errors.Is(err, os.ErrPermission):
		return &exitError{code: contract.CodeUnreachable, err: fmt.Errorf("%w (only the service's owner or root may steer it)", err)}
	case contract.OutOfDescriptors(err):
		return &exitError{code: contract.CodeResources, err: fmt.Errorf("%w (out of file descriptors: raise the limit, ulimit -n or LimitNOFILE=)", err)}
	}
	switch code := contract.CodeOf(err); code {
	case contract.CodeUsage, contract.CodeUnreachable, contract.CodeForbidden, contract.CodeControlProtocol:
		return &exitError{code: code, err: err}
	}
	return &exitError{code: contract.CodeUnreachable, err: err}
}
