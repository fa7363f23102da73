// Command baton drives zero-downtime upgrades of services built on the baton
// library (and, later, supervised by `baton run`).
//
//	baton upgrade --name hello          # upgrade to the binary on disk now
//	baton status --name hello --json    # what runs, which generation, last outcome
//
// Exit codes, for scripts:
//
//	0  success
//	1  the upgrade failed; the running generation keeps serving
//	2  usage error
//	3  the service cannot be reached (not running, wrong name, permission)
//	4  busy: an upgrade is running, too many old generations still drain, or the
//	   generation reached is starting or draining; retry later
//	5  protocol or internal error
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes; documented in the package comment and in --help.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitUnreachable = 3
	exitBusy        = 4
	exitInternal    = 5
)

// exitError carries an exit code to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	// Not a cobra command: it must not parse the app's arguments.
	if len(os.Args) > 1 && os.Args[1] == activateCmd {
		activate(os.Args[2:])
	}
	if len(os.Args) > 1 && os.Args[1] == watchdogCmd {
		watchdog()
	}
	root := newRootCmd()
	err := root.Execute()
	if err == nil {
		os.Exit(exitOK)
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err != errReported {
			fmt.Fprintln(os.Stderr, "baton:", ee.err)
		}
		os.Exit(ee.code)
	}
	// Anything cobra itself rejected is a usage error.
	fmt.Fprintln(os.Stderr, "baton:", err)
	os.Exit(exitUsage)
}

// errReported means the command already printed what happened.
var errReported = errors.New("reported")

const exitCodesHelp = `Exit codes:
  0  success
  1  the upgrade failed; the running generation keeps serving
  2  usage error
  3  the service cannot be reached (not running, wrong name, permission)
  4  busy: an upgrade is running, too many old generations still drain, or the
     generation reached is starting or draining; retry later
  5  protocol or internal error`

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "baton",
		Short: "Zero-downtime upgrades for Go network services",
		Long: `baton switches a running service to a new binary without dropping a connection
or a request: the running generation hands its listening sockets to the new one,
waits until it is ready, then drains. If the new one fails, the old one keeps
serving and you are told exactly why.

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRunCmd(), newUpgradeCmd(), newRollbackCmd(), newStatusCmd(), newLogsCmd(), newStopCmd(),
		newInstallCmd(), newCheckCmd(), newReleasesCmd())
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: fmt.Errorf("%w\nsee '%s --help'", err, c.CommandPath())}
	})
	return root
}
