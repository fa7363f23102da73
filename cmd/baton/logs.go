package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/spf13/cobra"
)

func newLogsCmd() *cobra.Command {
	var (
		f      commonFlags
		follow bool
		lines  int
	)
	c := &cobra.Command{
		Use:   "logs --name NAME [-f]",
		Short: "Show the output of a supervised app's generations (baton run)",
		Long: `Print the recent output of the generations run by the supervisor NAME (baton
run), each line tagged with its generation and pid; with -f, keep printing
new lines until interrupted. The supervisor keeps the last 2000 lines in
memory; its --log-file (rotated) or stdout has them all.

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLogs(cmd.OutOrStdout(), f, follow, lines)
		},
	}
	f.add(c, 10*time.Second)
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	c.Flags().IntVarP(&lines, "lines", "l", 100, "how many recent lines to print first")
	return c
}

func runLogs(out io.Writer, f commonFlags, follow bool, lines int) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	since := -int64(lines)
	for {
		rctx, cancel := context.WithTimeout(ctx, f.timeout)
		resp, err := ctl.Do(rctx, f.name, ctl.Request{Op: ctl.OpLogs, Since: since})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted
			}
			return reportTransport(out, f, err)
		}
		if !resp.OK {
			return &exitError{code: resp.Code, err: fmt.Errorf("logs of %s: %s (is it run by baton run?)", f.name, resp.Error)}
		}
		var r contract.LogsResult
		if err := resp.Decode(&r); err != nil {
			return &exitError{code: contract.CodeInternal, err: err}
		}
		for _, l := range r.Lines {
			if f.json {
				b, _ := json.Marshal(l)
				fmt.Fprintln(out, string(b))
			} else {
				fmt.Fprintln(out, l.Text)
			}
		}
		since = r.Next
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}
