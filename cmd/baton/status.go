package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/spf13/cobra"
)

func newStatusCmd() *cobra.Command {
	var f commonFlags
	c := &cobra.Command{
		Use:   "status --name NAME",
		Short: "Show the serving generation of a service and its last upgrade",
		Long: `Show which generation of the service NAME serves (pid, binary, uptime,
listeners), which old generations still drain, and the outcome of the last
upgrade.

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStatus(cmd.OutOrStdout(), f)
		},
	}
	f.add(c, 10*time.Second)
	return c
}

func runStatus(out io.Writer, f commonFlags) error {
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	resp, err := ctl.Do(ctx, f.name, ctl.Request{Op: ctl.OpStatus})
	if err != nil {
		return reportTransport(out, f, err)
	}
	if !resp.OK {
		if f.json {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			_ = enc.Encode(map[string]any{"name": f.name, "ok": false, "code": resp.Code, "error": resp.Error})
		}
		return &exitError{code: resp.Code, err: fmt.Errorf("status of %s: %s (%s)", f.name, resp.Error, resp.Code)}
	}
	var st contract.Status // a library service's has no Supervisor part
	if err := resp.Decode(&st); err != nil {
		return &exitError{code: contract.CodeInternal, err: fmt.Errorf("unreadable status: %w", err)}
	}
	if f.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(json.RawMessage(resp.Result))
	}
	fmt.Fprintf(out, "service     %s\n", st.Name)
	fmt.Fprintf(out, "pid         %d (generation %d, %s)\n", st.PID, st.Generation, st.Phase)
	fmt.Fprintf(out, "binary      %s\n", st.Binary)
	fmt.Fprintf(out, "uptime      %v\n", st.Uptime.Round(time.Second))
	fmt.Fprintf(out, "listeners   %s\n", strings.Join(st.Listeners, ", "))
	if len(st.Draining) > 0 {
		fmt.Fprintf(out, "draining    %v\n", st.Draining)
	}
	if st.ConnsTaken > 0 {
		fmt.Fprintf(out, "taken over  %d idle connection(s) from the previous generation\n", st.ConnsTaken)
	}
	if sup := st.Supervisor; sup != nil {
		fmt.Fprintf(out, "supervisor  pid %d, %d restart(s), runs %s\n", sup.PID, sup.Restarts, strings.Join(sup.Command, " "))
		for _, g := range sup.Generations {
			conns := "conns ?"
			if g.Conns != nil {
				conns = fmt.Sprintf("conns %d", *g.Conns)
			}
			fmt.Fprintf(out, "  gen %-4d pid %-7d %-9s ready after %-8v %-9s sha256 %.12s  %s\n", g.Generation, g.PID, g.State,
				g.ReadyAfter.Round(time.Millisecond), conns, g.SHA256, g.Binary)
			if g.ConnsTaken > 0 || g.ConnsPassed > 0 {
				fmt.Fprintf(out, "           idle connections moved: %d taken from older generations, %d passed on\n", g.ConnsTaken, g.ConnsPassed)
			}
		}
		if px := sup.Proxy; px != nil {
			printProxy(out, px)
		}
	} else if st.OpenHandles > 0 {
		fmt.Fprintf(out, "open fds    %d\n", st.OpenHandles)
	}
	if l := st.Last; l != nil {
		if l.OK {
			fmt.Fprintf(out, "last upgrade %s: ok -> pid %d (ready after %v)\n", l.At.Format(time.RFC3339), l.Result.PID, l.Result.ReadyAfter.Round(time.Millisecond))
		} else {
			fmt.Fprintf(out, "last upgrade %s: FAILED (%s): %s\n", l.At.Format(time.RFC3339), l.Code, l.Error)
		}
	}
	return nil
}

// printProxy prints proxy mode's weights and figures (baton run --proxy).
func printProxy(out io.Writer, px *contract.ProxyInfo) {
	fmt.Fprintf(out, "proxy       %s", px.Mode)
	if c := px.Canary; c != nil {
		fmt.Fprintf(out, ", canary gen %d at %d%% (steps %v)", c.Generation, c.Weight, c.Steps)
	}
	if px.Unrouted > 0 {
		fmt.Fprintf(out, ", %d unrouted", px.Unrouted)
	}
	fmt.Fprintln(out)
	for _, b := range px.Backends {
		fmt.Fprintf(out, "  gen %-4d pid %-7d weight %3d%%  %6.1f req/s  errors %5.2f%%  p99 %-8v in flight %d  (last %.0fs)  %s\n",
			b.Generation, b.PID, b.Weight, b.RatePerSecond, 100*b.ErrorRatio, b.P99.Round(10*time.Microsecond), b.InFlight, b.WindowSeconds, b.Addr)
		if b.Passed > 0 || b.Refused > 0 {
			// tcp mode, a library app: its connections went to it whole
			// (their bytes and time in flight are not the proxy's to see).
			fmt.Fprintf(out, "           connections passed to it: %d; refused by it: %d\n", b.Passed, b.Refused)
		}
	}
}
