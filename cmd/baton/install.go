package main

import (
	"context"
	"fmt"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/release"
	"github.com/spf13/cobra"
)

// installReport is what `baton install --json` prints.
type installReport struct {
	Name      string           `json:"name,omitempty"`
	Installed string           `json:"installed"`
	OK        bool             `json:"ok"`
	Code      string           `json:"code,omitempty"`
	Error     string           `json:"error,omitempty"`
	Release   *release.Release `json:"release,omitempty"`
	Previous  *release.Release `json:"previous,omitempty"`
	Pruned    []string         `json:"pruned,omitempty"`
	Checks    *release.Report  `json:"checks,omitempty"`
}

// refusalHelp ends the --help of the commands that check a binary.
const refusalHelp = `A refused binary exits 1 (4 when it is still being written or another baton
holds the releases lock); --json prints a code: not_executable, module,
checksum, signature, smoke, unsafe_dir, disk_space or busy.

`

// staged is the outcome of checkAndActivate.
type staged struct {
	store   *release.Store
	report  *release.Report
	release release.Release
	pruned  []string
	changed bool // the installed path holds another binary than before
	// switched: Activate failed after the installed path was switched
	// (recording the state failed): something did change.
	switched bool
}

// failure says what a failed check-and-activate changed.
func (s *staged) failure(what, installed string, err error) error {
	if s != nil && s.switched {
		return fmt.Errorf("%s: release %s IS installed at %s, but recording it failed: %w", what, s.release.ID, installed, err)
	}
	return fmt.Errorf("%s refused, nothing changed at %s: %w", what, installed, err)
}

// checkAndActivate takes the store lock (the caller unlocks st.store),
// checks file, stages it and switches the installed path to it. On a
// refusal nothing is changed.
func checkAndActivate(ctx context.Context, f stageFlags, installed, file string) (*staged, error) {
	s, err := checkAndStage(ctx, f, installed, file)
	if err != nil {
		return s, err
	}
	if err := s.store.Activate(s.release.ID); err != nil {
		if now, _ := release.FileSHA256(installed); now == s.release.SHA256 && s.changed {
			s.switched = true
		}
		return s, err
	}
	s.pruned, _ = s.store.Prune()
	return s, nil
}

func newInstallCmd() *cobra.Command {
	var f stageFlags
	var name string
	var asJSON bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "install (--name NAME | --path PATH) FILE",
		Short: "Check a new binary and install it on disk, without restarting the service",
		Long: `Check FILE (see baton check), copy it into the releases directory beside the
installed binary (PATH.releases/<id>/, fsynced), then switch the installed
path to it atomically (a copy renamed over it; on Windows the running .exe is
renamed aside first). A crash at any moment leaves the old or the new binary
installed, never a part of one. The last --keep releases are kept, and
always the installed and the previous one.

The service keeps running the binary it started with; run
'baton upgrade --name NAME' to start the new one (or use
'baton upgrade --name NAME --binary FILE' to do both, with a rollback on disk
when the upgrade fails). The installed path comes from the running service's
status (--name), or --path when it is not running.

` + refusalHelp + exitCodesHelp,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			out := cmd.OutOrStdout()
			installed, _, err := installedPath(ctx, name, f.path)
			if err != nil {
				return err
			}
			rep := installReport{Name: name, Installed: installed}
			s, err := checkAndActivate(ctx, f, installed, args[0])
			if s != nil {
				defer s.store.Unlock()
				rep.Checks = s.report
			}
			if err == nil {
				rep.OK, rep.Release, rep.Pruned = true, &s.release, s.pruned
				if p, ok := s.store.Previous(); ok {
					rep.Previous = &p
				}
			} else {
				rep.Code, rep.Error = contract.CodeOf(err), err.Error()
			}
			if asJSON {
				printJSON(out, rep)
			} else if err == nil {
				what := "installed"
				if !s.changed {
					what = "already installed"
				}
				fmt.Fprintf(out, "%s release %s at %s (sha256 %.16s…)\n", what, s.release.ID, installed, s.release.SHA256)
				if rep.Previous != nil {
					fmt.Fprintf(out, "previous release %s (baton rollback on disk: baton install --path %s %s)\n", rep.Previous.ID, installed, rep.Previous.Path)
				}
				if name != "" {
					fmt.Fprintf(out, "the service keeps running its binary; start the new one with: baton upgrade --name %s\n", name)
				}
			} else if s != nil && s.report != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "checks of %s:\n%s", s.report.Binary, s.report)
			}
			if err != nil {
				if ee, ok := err.(*exitError); ok {
					return ee
				}
				ee := refusal(err)
				if asJSON {
					ee.err = errReported
				} else {
					ee.err = s.failure("install", installed, err)
				}
				return ee
			}
			return nil
		},
	}
	c.Flags().StringVarP(&name, "name", "n", "", "name of the service's control endpoint (to learn the installed path)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the outcome as JSON on stdout")
	c.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this long (waiting for another baton's lock included)")
	f.add(c, true)
	return c
}
