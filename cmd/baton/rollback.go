package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/release"
	"github.com/spf13/cobra"
)

func newRollbackCmd() *cobra.Command {
	var f commonFlags
	c := &cobra.Command{
		Use:   "rollback --name NAME",
		Short: "Run the previous binary again",
		Long: `Under baton run: ask the supervisor of NAME to start the binary and arguments
of the previous generation again as a new generation, on the same sockets,
then drain the current one. The supervisor keeps what each generation runs,
so this works even if the installed file changed; when the binary is managed
by baton install, the installed path is switched back to that release too.

A service that uses the library without baton run has no previous
generation to start: its previous release on disk (baton install, baton
upgrade --binary) is installed again and the service upgraded to it; if that
upgrade fails, the release that was installed is put back.

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
	if !resp.OK && resp.Code == contract.CodeUnsupported {
		// A library service: roll back on disk, then upgrade.
		r, rerr := rollbackRelease(ctx, f.name)
		if rerr != nil {
			if f.json {
				_ = json.NewEncoder(out).Encode(map[string]any{"name": f.name, "ok": false, "error": rerr.Error()})
				return &exitError{code: contract.CodeFailed, err: errReported}
			}
			return &exitError{code: contract.CodeFailed, err: fmt.Errorf("rollback of %s: %w", f.name, rerr)}
		}
		resp = r
	}
	if f.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(resp)
	}
	if !resp.OK {
		if f.json {
			return &exitError{code: resp.Code, err: errReported}
		}
		return &exitError{code: resp.Code, err: fmt.Errorf("rollback of %s failed (%s): %s", f.name, resp.Code, resp.Error)}
	}
	var r contract.UpgradeResult
	if err := resp.Decode(&r); err != nil {
		return &exitError{code: contract.CodeInternal, err: err}
	}
	if !f.json {
		fmt.Fprintf(out, "rolled back %s: generation %d, pid %d, ready after %v\n", f.name, r.Generation, r.PID, r.ReadyAfter.Round(time.Millisecond))
	}
	return nil
}

// rollbackRelease rolls a library service back through its releases
// directory: the previous release is installed, the service upgraded to
// it, and the release that was installed is put back if that fails. It
// returns the upgrade's response.
func rollbackRelease(ctx context.Context, name string) (ctl.Response, error) {
	sresp, err := ctl.Do(ctx, name, ctl.Request{Op: ctl.OpStatus})
	if err != nil {
		return ctl.Response{}, err
	}
	var st contract.Status
	if err := sresp.Decode(&st); err != nil || st.Binary == "" {
		return ctl.Response{}, fmt.Errorf("the service's status does not say which binary it runs (%v)", err)
	}
	if !release.Managed(st.Binary) {
		return ctl.Response{}, fmt.Errorf("%s was not installed by baton install or baton upgrade --binary (no %s), so there is no previous release to go back to", st.Binary, release.ReleasesDir(st.Binary))
	}
	store, err := release.Open(st.Binary, release.StoreOptions{})
	if err != nil {
		return ctl.Response{}, err
	}
	if err := store.Lock(ctx); err != nil {
		return ctl.Response{}, err
	}
	defer store.Unlock()
	if _, ok := store.Previous(); !ok {
		return ctl.Response{}, fmt.Errorf("no previous release of %s", st.Binary)
	}
	back, err := store.Rollback()
	if err != nil {
		return ctl.Response{}, fmt.Errorf("installing the previous release: %w", err)
	}
	resp, err := ctl.Do(ctx, name, ctl.Request{Op: ctl.OpUpgrade})
	if err == nil && resp.OK {
		return resp, nil
	}
	if err != nil && !ctl.NotSent(err) {
		// The request was sent: the service may be running release back
		// now, whatever happened to the answer. Leave the disk as it is.
		return resp, fmt.Errorf("%w\nrelease %s stays installed (the service may have started it): check with baton status --name %s", err, back.ID, name)
	}
	// The previous release did not take over: the one that serves goes
	// back (marked failed only if it was started and failed).
	putBack := store.PutBack
	if err == nil && startedAndFailed(resp.Code) {
		putBack = store.RollbackFrom
	}
	if _, _, rerr := putBack(back.SHA256); rerr != nil {
		return resp, fmt.Errorf("release %s did not take over (%v %s), and putting the installed release back failed: %v", back.ID, err, resp.Error, rerr)
	}
	if err != nil {
		return resp, err
	}
	return resp, nil
}
