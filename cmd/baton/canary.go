package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/spf13/cobra"
)

// baton promote and baton weight: steering a canary in proxy mode (baton
// rollback ends one too).

func newPromoteCmd() *cobra.Command {
	var f commonFlags
	c := &cobra.Command{
		Use:   "promote --name NAME",
		Short: "Proxy mode: give the canary all traffic and complete its upgrade",
		Long: `Under baton run --proxy, while a canary started by baton upgrade --canary or
--steps is under way: give the new generation all new traffic; the stable
generation drains (requests in progress finish where they started). Prints
the generation that serves alone then.

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return steer(cmd.OutOrStdout(), f, ctl.Request{Op: contract.OpPromote})
		},
	}
	f.add(c, 5*time.Minute)
	return c
}

func newWeightCmd() *cobra.Command {
	var f commonFlags
	var pct int
	c := &cobra.Command{
		Use:   "weight --name NAME --set P",
		Short: "Proxy mode: set the canary's share of new traffic",
		Long: `Under baton run --proxy, while a canary is under way: give it P percent of
new requests (http) or connections (tcp) and the stable generation the rest,
at once. Requests in flight finish where they started. The stepping of
--steps ends: the canary then waits for baton promote or baton rollback
(--set 100 is a promote).

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("set") || pct < 0 || pct > 100 {
				return &exitError{code: contract.CodeUsage, err: fmt.Errorf("--set P: the canary's share, 0 to 100 (percent)")}
			}
			return steer(cmd.OutOrStdout(), f, ctl.Request{Op: contract.OpWeight, Weight: &pct})
		},
	}
	f.add(c, time.Minute)
	c.Flags().IntVar(&pct, "set", 0, "the canary's share of new traffic, percent (0-100)")
	return c
}

// steer sends a canary command and prints where the canary stands (or
// the generation that serves alone after a promote).
func steer(out io.Writer, f commonFlags, req ctl.Request) error {
	if err := ctl.CheckName(f.name); err != nil {
		return &exitError{code: contract.CodeUsage, err: err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	resp, err := ctl.Do(ctx, f.name, req)
	if err != nil {
		return reportTransport(out, f, err)
	}
	if f.json {
		printJSON(out, resp)
	}
	if !resp.OK {
		if f.json {
			return &exitError{code: resp.Code, err: errReported}
		}
		return &exitError{code: resp.Code, err: fmt.Errorf("%s of %s failed (%s): %s", req.Op, f.name, resp.Code, resp.Error)}
	}
	var r contract.UpgradeResult
	if err := resp.Decode(&r); err != nil {
		return &exitError{code: contract.CodeInternal, err: err}
	}
	if f.json {
		return nil
	}
	if c := r.Canary; c != nil {
		fmt.Fprintf(out, "canary of %s: generation %d, pid %d, has %d%% of new traffic\n", f.name, c.Generation, c.PID, c.Weight)
	} else {
		fmt.Fprintf(out, "promoted %s: generation %d, pid %d serves all traffic; the previous generation drains\n", f.name, r.Generation, r.PID)
	}
	return nil
}
