package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/release"
	"github.com/spf13/cobra"
)

// releaseEntry is one line of `baton releases`.
type releaseEntry struct {
	release.Release
	Running bool `json:"running"` // the serving generation runs this binary
}

// releasesReport is what `baton releases --json` prints.
type releasesReport struct {
	Name      string         `json:"name,omitempty"`
	Installed string         `json:"installed"`
	Dir       string         `json:"dir"`
	Running   string         `json:"running_sha256,omitempty"`
	Releases  []releaseEntry `json:"releases"`
}

func newReleasesCmd() *cobra.Command {
	var name, path string
	var asJSON bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "releases (--name NAME | --path PATH)",
		Short: "List the staged releases of a service's binary",
		Long: `List the releases kept beside the installed binary (PATH.releases/), most
recently staged first, marking the one installed at PATH now, the one the
serving generation runs (when the service answers), and the previous one (what
a rollback on disk installs).

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			installed, st, err := installedPath(ctx, name, path)
			if err != nil {
				return err
			}
			rep := releasesReport{Name: name, Installed: installed, Dir: release.ReleasesDir(installed), Running: runningSHA256(st), Releases: []releaseEntry{}}
			var list []release.Release
			// Listing must not create a releases directory (that would make
			// the binary look managed by baton install).
			if release.Managed(installed) {
				s, err := release.Open(installed, release.StoreOptions{})
				if err != nil {
					return &exitError{code: contract.CodeInternal, err: err}
				}
				rep.Dir = s.Dir()
				if list, err = s.List(); err != nil {
					return &exitError{code: contract.CodeInternal, err: err}
				}
			}
			for _, r := range list {
				rep.Releases = append(rep.Releases, releaseEntry{Release: r, Running: rep.Running != "" && r.SHA256 == rep.Running})
			}
			out := cmd.OutOrStdout()
			if asJSON {
				printJSON(out, rep)
				return nil
			}
			fmt.Fprintf(out, "releases of %s (%s)\n", installed, rep.Dir)
			if len(list) == 0 {
				fmt.Fprintln(out, "  none staged yet (baton install or baton upgrade --binary stage them)")
				return nil
			}
			tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "  ID\tVERSION\tSIZE\tSTAGED\tSTATE")
			for _, r := range rep.Releases {
				var marks []string
				if r.Installed {
					marks = append(marks, "installed")
				}
				if r.Running {
					marks = append(marks, "running")
				}
				if r.Previous {
					marks = append(marks, "previous")
				}
				if r.Failed {
					marks = append(marks, "failed (an upgrade to it was rolled back)")
				}
				v := r.Version
				if v == "" || v == "(devel)" {
					v = "-"
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", r.ID, v, humanSize(r.Size), r.StagedAt.Local().Format(time.DateTime), strings.Join(marks, ", "))
			}
			tw.Flush()
			if rep.Running != "" && !anyRunning(rep.Releases) {
				fmt.Fprintf(out, "the serving generation runs a binary that is not a release (sha256 %.16s…)\n", rep.Running)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&name, "name", "n", "", "name of the service's control endpoint")
	c.Flags().StringVar(&path, "path", "", "the installed binary's path (default: asked from the running service)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the list as JSON on stdout")
	c.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "give up after this long")
	return c
}

func anyRunning(rs []releaseEntry) bool {
	for _, r := range rs {
		if r.Running {
			return true
		}
	}
	return false
}

func humanSize(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%dK", n>>10)
}
