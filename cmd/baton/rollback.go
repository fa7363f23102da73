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
generation to start: it is sent its previous release on disk (baton install,
baton upgrade --binary), which it installs and upgrades to; if that upgrade
fails, it puts the release that was installed back itself (UpgradeTo).

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
	switch {
	case f.json:
	case r.Canary != nil: // proxy mode: the canary under way was stopped
		fmt.Fprintf(out, "rolled back %s: the canary (generation %d, pid %d) is out and drains; generation %d, pid %d serves all traffic\n",
			f.name, r.Canary.Generation, r.Canary.PID, r.Generation, r.PID)
	default:
		fmt.Fprintf(out, "rolled back %s: generation %d, pid %d, ready after %v\n", f.name, r.Generation, r.PID, r.ReadyAfter.Round(time.Millisecond))
	}
	return nil
}

// rollbackRelease rolls a library service back through its releases
// directory: the service is sent its previous release, which it installs
// and upgrades to (UpgradeTo: it puts the release that was installed back
// if that fails). It returns the upgrade's response, whose error says what
// is installed after a failure.
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
	back, ok := store.Previous()
	if !ok {
		return ctl.Response{}, fmt.Errorf("no previous release of %s", st.Binary)
	}
	resp, err := ctl.Do(ctx, name, ctl.Request{Op: ctl.OpUpgrade, Binary: back.Path})
	if err != nil {
		if ctl.NotSent(err) {
			return resp, err // nothing was changed
		}
		// The request was sent: the service may be installing or running
		// release back now, whatever happened to the answer.
		return resp, fmt.Errorf("%w\nrelease %s may be installed (the service may have started it): check with baton status --name %s", err, back.ID, name)
	}
	if !resp.OK {
		// The service put the release that was installed back (or says
		// why it could not): report what is installed now.
		if now, serr := release.FileSHA256(store.Installed()); serr == nil {
			if now == back.SHA256 {
				resp.Error += fmt.Sprintf("\nrelease %s is still installed at %s", back.ID, store.Installed())
			} else if cur, ok := releaseWithSHA(store, now); ok {
				resp.Error += fmt.Sprintf("\nthe installed binary %s is release %s again", store.Installed(), cur.ID)
			}
		}
	}
	return resp, nil
}

func releaseWithSHA(store *release.Store, sum string) (release.Release, bool) {
	rels, _ := store.List()
	for _, r := range rels {
		if r.SHA256 == sum {
			return r, true
		}
	}
	return release.Release{}, false
}
