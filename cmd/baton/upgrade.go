package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/baton-go/baton"
	"github.com/baton-go/baton/internal/ctl"
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
	Name   string                `json:"name"`
	OK     bool                  `json:"ok"`
	Code   string                `json:"code,omitempty"`
	Error  string                `json:"error,omitempty"`
	Result *baton.UpgradeResult  `json:"result,omitempty"`
	Exit   *baton.ChildExitError `json:"child_exit,omitempty"`
	Took   time.Duration         `json:"took_ns"`
}

func newUpgradeCmd() *cobra.Command {
	var f commonFlags
	c := &cobra.Command{
		Use:   "upgrade --name NAME",
		Short: "Upgrade a running service to the binary that is on disk now",
		Long: `Ask the service NAME to start its binary as it is on disk now, hand it the
listening sockets, wait until it is ready, and drain the old generation.
Prints the new pid and timings, or exactly why the upgrade failed (the old
generation keeps serving then).

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runUpgrade(cmd.OutOrStdout(), f)
		},
	}
	f.add(c, 5*time.Minute)
	c.Flags().StringVar(&f.binary, "binary", "", "install this binary first (the running one is renamed aside and put back if the upgrade fails)")
	return c
}

func runUpgrade(out io.Writer, f commonFlags) error {
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	start := time.Now()
	req := ctl.Request{Op: ctl.OpUpgrade}
	if f.binary != "" {
		abs, err := filepath.Abs(f.binary)
		if err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		if _, err := os.Stat(abs); err != nil {
			return &exitError{code: exitUsage, err: fmt.Errorf("--binary: %w", err)}
		}
		req.Binary = abs
	}
	resp, err := ctl.Do(ctx, f.name, req)
	if err != nil {
		return reportTransport(out, f, err)
	}
	rep := upgradeReport{Name: f.name, OK: resp.OK, Code: resp.Code, Error: resp.Error, Took: time.Since(start)}
	if resp.OK {
		var r baton.UpgradeResult
		if err := resp.Decode(&r); err != nil {
			return &exitError{code: exitInternal, err: fmt.Errorf("unreadable upgrade result: %w", err)}
		}
		rep.Result = &r
	} else if resp.Code == ctl.CodeChildExited && len(resp.Result) > 0 {
		var ce baton.ChildExitError
		if json.Unmarshal(resp.Result, &ce) == nil {
			rep.Exit = &ce
		}
	}
	if f.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else if rep.OK {
		r := rep.Result
		fmt.Fprintf(out, "upgraded %s: generation %d, pid %d, ready after %v", f.name, r.Generation, r.PID, r.ReadyAfter.Round(time.Millisecond))
		if r.AppStartup > 0 { // reported by the baton library only
			fmt.Fprintf(out, " (app start-up %v, baton %v)", r.AppStartup.Round(time.Millisecond), (r.ReadyAfter - r.AppStartup).Round(time.Millisecond))
		}
		fmt.Fprintln(out)
	}
	if rep.OK {
		return nil
	}
	code := exitFailed
	switch resp.Code {
	case ctl.CodeBusy, ctl.CodeTooMany, ctl.CodeStopped:
		code = exitBusy
	case ctl.CodeForbidden:
		code = exitUnreachable
	case ctl.CodeBadRequest, ctl.CodeInternal:
		code = exitInternal
	case ctl.CodeProtocol:
		if strings.Contains(resp.Error, "control protocol") {
			code = exitInternal
		}
	}
	if f.json {
		return &exitError{code: code, err: errReported}
	}
	msg := resp.Error
	switch {
	case code == exitFailed:
		msg += "\nthe running generation keeps serving"
	case resp.Code == ctl.CodeStopped:
		msg += "\nthe request reached a generation that is starting or draining; retry in a moment"
	}
	return &exitError{code: code, err: fmt.Errorf("upgrade of %s failed (%s): %s", f.name, resp.Code, msg)}
}

// reportTransport reports a failure to talk to the service at all, as JSON
// too when --json was asked for (scripts parse stdout, whatever happened).
func reportTransport(out io.Writer, f commonFlags, err error) error {
	ee := transportError(err).(*exitError)
	if f.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"name": f.name, "ok": false, "code": transportCode(ee.code), "error": ee.err.Error()})
	}
	return ee
}

func transportCode(exit int) string {
	switch exit {
	case exitUsage:
		return "usage"
	case exitUnreachable:
		return "unreachable"
	case exitInternal:
		return "protocol"
	}
	return "timeout"
}

// transportError classifies a failure to talk to the service at all.
func transportError(err error) error {
	switch {
	case errors.Is(err, ctl.ErrBadName):
		return &exitError{code: exitUsage, err: err}
	case errors.Is(err, ctl.ErrVersion):
		return &exitError{code: exitInternal, err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &exitError{code: exitFailed, err: fmt.Errorf("%w (the service may still finish the operation; check `baton status`)", err)}
	case errors.Is(err, os.ErrPermission):
		return &exitError{code: exitUnreachable, err: fmt.Errorf("%w (only the service's owner or root may steer it)", err)}
	}
	return &exitError{code: exitUnreachable, err: err}
}
