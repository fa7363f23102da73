package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/spf13/cobra"
)

func newStopCmd() *cobra.Command {
	var f commonFlags
	c := &cobra.Command{
		Use:   "stop --name NAME",
		Short: "Stop a service: it stops accepting, drains and exits",
		Long: `Ask the service NAME to stop: the serving generation stops accepting, lets
requests in flight finish (its drain deadline) and exits. Waits until the
control endpoint is gone, or --timeout.

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStop(cmd.OutOrStdout(), f)
		},
	}
	f.add(c, time.Minute)
	return c
}

func runStop(out io.Writer, f commonFlags) error {
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	resp, err := ctl.Do(ctx, f.name, ctl.Request{Op: ctl.OpStop})
	if err != nil {
		return reportTransport(out, f, err)
	}
	var st contract.Status
	if !resp.OK {
		return &exitError{code: resp.Code, err: fmt.Errorf("stop of %s: %s (%s)", f.name, resp.Error, resp.Code)}
	}
	if err := resp.Decode(&st); err != nil {
		return &exitError{code: contract.CodeInternal, err: fmt.Errorf("stop of %s: unreadable answer: %w", f.name, err)}
	}
	// Wait until the service is gone: nothing answers under the name and
	// its control socket has been removed (the last thing a stopping
	// service does). A socket that stays unanswered (its service was
	// killed before it could remove it) counts as gone after a while.
	var deadSince time.Time
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := ctl.Do(pctx, f.name, ctl.Request{Op: ctl.OpStatus})
		pcancel()
		if errors.Is(err, ctl.ErrNoEndpoint) {
			if endpointRemoved(f.name) {
				break
			}
			if deadSince.IsZero() {
				deadSince = time.Now()
			} else if time.Since(deadSince) > 2*time.Second {
				break
			}
		} else {
			deadSince = time.Time{}
		}
		if ctx.Err() != nil {
			return &exitError{code: contract.CodeFailed, err: fmt.Errorf("%s (pid %d) still answers after %v", f.name, st.PID, f.timeout)}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"name": f.name, "ok": true, "pid": st.PID})
	}
	fmt.Fprintf(out, "stopped %s (pid %d)\n", f.name, st.PID)
	return nil
}

// endpointRemoved reports whether the control endpoint of name no longer
// exists at all (not merely unanswered).
func endpointRemoved(name string) bool {
	addr, err := ctl.Address(name)
	if err != nil {
		return false
	}
	_, err = os.Lstat(addr)
	return errors.Is(err, os.ErrNotExist)
}
