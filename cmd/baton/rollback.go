package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/baton-go/baton"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/spf13/cobra"
)

func newRollbackCmd() *cobra.Command {
	var f commonFlags
	c := &cobra.Command{
		Use:   "rollback --name NAME",
		Short: "Run the previous generation's binary again (baton run)",
		Long: `Ask the supervisor of NAME (baton run) to start the binary and arguments of
the previous generation again as a new generation, on the same sockets, then
drain the current one. The supervisor keeps a copy of what each generation
runs, so this works even if the installed file changed.

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRollback(cmd.OutOrStdout(), f)
		},
	}
	f.add(c, 5*time.Minute)
	return c
}

func runRollback(out io.Writer, f commonFlags) error {
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	resp, err := ctl.Do(ctx, f.name, ctl.Request{Op: ctl.OpRollback})
	if err != nil {
		return reportTransport(out, f, err)
	}
	if f.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(resp)
	}
	if !resp.OK {
		code := exitFailed
		switch resp.Code {
		case ctl.CodeBusy, ctl.CodeTooMany, ctl.CodeStopped:
			code = exitBusy
		case ctl.CodeBadRequest, ctl.CodeInternal, ctl.CodeUnsupported:
			code = exitInternal
		case ctl.CodeForbidden:
			code = exitUnreachable
		}
		if f.json {
			return &exitError{code: code, err: errReported}
		}
		return &exitError{code: code, err: fmt.Errorf("rollback of %s failed (%s): %s", f.name, resp.Code, resp.Error)}
	}
	var r baton.UpgradeResult
	if err := resp.Decode(&r); err != nil {
		return &exitError{code: exitInternal, err: err}
	}
	if !f.json {
		fmt.Fprintf(out, "rolled back %s: generation %d, pid %d, ready after %v\n", f.name, r.Generation, r.PID, r.ReadyAfter.Round(time.Millisecond))
	}
	return nil
}
