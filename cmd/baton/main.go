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
//	2  usage error, or the operation does not apply to this service (e.g.
//	   logs of a service not run by baton run)
//	3  the service cannot be reached (not running, wrong name, permission)
//	4  busy: an upgrade is running, too many old generations still drain, or the
//	   generation reached is starting or draining; retry later
//	5  protocol or internal error
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/baton-go/baton/internal/contract"
	"github.com/spf13/cobra"
)

// Exit codes (internal/contract's); documented in the package comment and
// in --help.
const (
	exitOK          = contract.ExitOK
	exitFailed      = contract.ExitFailed
	exitUsage       = contract.ExitUsage
	exitUnreachable = contract.ExitUnreachable
	exitBusy        = contract.ExitBusy
	exitInternal    = contract.ExitInternal
)

// exitError carries a failure's wire code to main, which exits with
// contract.ExitCode(code): every exit code is decided from a code, and
// --json reports print the same code.
type exitError struct {
	code string // a contract code (contract.CodeUsage, a service's Response.Code, ...)
	err  error
}

// exit is the process exit code for e.
func (e *exitError) exit() int {
	if e.code == "" {
		return exitFailed // a failure without a code is still a failure
	}
	return contract.ExitCode(e.code)
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
		os.Exit(ee.exit())
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
  2  usage error, or the operation does not apply to this service (e.g.
     logs of a service not run by baton run)
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
	root.AddCommand(newRunCmd(), newUpgradeCmd(), newRollbackCmd(), newPromoteCmd(), newWeightCmd(), newStatusCmd(), newLogsCmd(), newStopCmd(),
		newInstallCmd(), newCheckCmd(), newReleasesCmd(), newServiceCmd(), newEventsCmd(), newReportCmd())
	root.AddCommand(newLBCmd())
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: contract.CodeUsage, err: fmt.Errorf("%w\nsee '%s --help'", err, c.CommandPath())}
	})
	return root
}
