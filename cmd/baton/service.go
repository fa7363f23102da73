package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/release"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// serviceInstall is what `baton service install` was told.
type serviceInstall struct {
	run          runFlags
	displayName  string
	description  string
	start        string // auto, manual, delayed
	account      string
	passwordFile string
	dryRun       bool
	force        bool
}

// servicePlan is what install registers: the service (Windows) or the
// unit (Linux). Built without touching the system, printed by --dry-run.
type servicePlan struct {
	Name        string
	DisplayName string
	Description string
	Start       string
	Account     string
	Exe         string   // the baton binary the service runs
	Args        []string // its arguments: run --as-service ... -- APP ARGS
	App         []string // the app's command line
	LogFile     string
	Recovery    []time.Duration // restart delays after the 1st, 2nd, later failures
}

var serviceNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$`)

func checkServiceName(name string) error {
	if name == "" {
		return &exitError{code: contract.CodeUsage, err: errors.New("--name is required")}
	}
	if !serviceNameRE.MatchString(name) {
		return &exitError{code: contract.CodeUsage, err: fmt.Errorf("--name %q: use letters, digits, '.', '_' and '-' (at most 80, starting with a letter or digit)", name)}
	}
	return nil
}

// windowsServiceUnserved are the baton run flags whose endpoints the
// Windows service does not start (runAsService serves neither metrics nor
// HTTP control, and refuses them): written into its command line, they
// would make every start of the service fail.
var windowsServiceUnserved = []string{"metrics", "http-control", "http-control-token-file", "http-control-allow-remote", "http-control-rate"}

// refuseFlags is a usage error naming those of names that were given in
// fs, or nil when none was.
func refuseFlags(fs *pflag.FlagSet, names []string, why string) error {
	var given []string
	for _, n := range names {
		if f := fs.Lookup(n); f != nil && f.Changed {
			given = append(given, "--"+n)
		}
	}
	if len(given) == 0 {
		return nil
	}
	return &exitError{code: contract.CodeUsage, err: fmt.Errorf("%s: %s", strings.Join(given, ", "), why)}
}

// recoveryDelays: the SCM restarts a failed service after 5s, then 30s,
// then 60s (the failure count resets after a day without failure).
var recoveryDelays = []time.Duration{5 * time.Second, 30 * time.Second, 60 * time.Second}

// plan builds what install registers from the parsed command line: exe is
// the baton binary (absolute), app the command after -- (the app made
// absolute), runArgs the `baton run` flags given.
func (si *serviceInstall) plan(exe string, runArgs, app []string, logFile string) (servicePlan, error) {
	p := servicePlan{Name: si.run.cfg.Name, DisplayName: si.displayName, Description: si.description,
		Start: si.start, Account: si.account, Exe: exe, App: app, LogFile: logFile, Recovery: recoveryDelays}
	if p.DisplayName == "" {
		p.DisplayName = "baton: " + p.Name
	}
	if p.Description == "" {
		p.Description = "Supervised by baton: zero-downtime upgrades of " + filepath.Base(app[0])
	}
	switch p.Start {
	case "auto", "manual", "delayed":
	default:
		return p, &exitError{code: contract.CodeUsage, err: fmt.Errorf("--start %q: use auto, manual or delayed", p.Start)}
	}
	if p.Account == "" {
		p.Account = "LocalSystem"
	}
	p.Args = append([]string{"run", "--" + asServiceFlag, "--name=" + p.Name}, runArgs...)
	if logFile != "" {
		p.Args = append(p.Args, "--log-file="+logFile)
	}
	p.Args = append(append(p.Args, "--"), app...)
	return p, nil
}

// String is the --dry-run output for Windows.
func (p servicePlan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "service      %s\n", p.Name)
	fmt.Fprintf(&b, "display name %s\n", p.DisplayName)
	fmt.Fprintf(&b, "description  %s\n", p.Description)
	fmt.Fprintf(&b, "start        %s\n", p.Start)
	fmt.Fprintf(&b, "account      %s\n", p.Account)
	fmt.Fprintf(&b, "command line %s\n", windowsCommandLine(append([]string{p.Exe}, p.Args...)))
	fmt.Fprintf(&b, "log file     %s (rotated; the supervisor's own log beside it, %s)\n", p.LogFile, supervisorLogName(p.LogFile))
	var r []string
	for _, d := range p.Recovery {
		r = append(r, "restart after "+d.String())
	}
	fmt.Fprintf(&b, "on failure   %s (failure count reset after 24h)\n", strings.Join(r, ", "))
	fmt.Fprintf(&b, "event log    source %q in the Application log\n", p.Name)
	return b.String()
}

// supervisorLogName is where the service writes the supervisor's own log:
// beside the generations' log file.
func supervisorLogName(logFile string) string {
	ext := filepath.Ext(logFile)
	return strings.TrimSuffix(logFile, ext) + ".supervisor" + ext
}

// windowsCommandLine quotes args as the Windows C runtime parses them
// (syscall.EscapeArg's rules), for printing on every OS.
func windowsCommandLine(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = escapeWindowsArg(a)
	}
	return strings.Join(out, " ")
}

func escapeWindowsArg(s string) string {
	if s == "" {
		return `""`
	}
	if !strings.ContainsAny(s, " \t\"") {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	slashes := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\\':
			slashes++
		case '"':
			b.WriteString(strings.Repeat(`\`, slashes+1))
			slashes = 0
		default:
			slashes = 0
		}
		b.WriteByte(c)
	}
	b.WriteString(strings.Repeat(`\`, slashes))
	b.WriteByte('"')
	return b.String()
}

// checkServiceBinaries runs `baton check`'s checks on each binary the
// service will run (in place: the directory it runs from must not be
// writable by other users). An unsafe directory is refused unless force,
// and said; any other refusal stands.
func checkServiceBinaries(ctx context.Context, out io.Writer, bins []string, force bool) error {
	for _, b := range bins {
		rep, err := release.Check(ctx, b, release.CheckOptions{Installed: b, Staged: true})
		if err == nil {
			continue
		}
		onlyDir := errors.Is(err, release.ErrUnsafeDir)
		if rep != nil {
			for _, c := range rep.Checks {
				if c.Status == release.StatusFailed && c.Name != "directory" {
					onlyDir = false
				}
			}
		}
		if onlyDir && force {
			fmt.Fprintf(out, "warning: %s: %v (installed anyway: --force)\n", b, err)
			continue
		}
		if onlyDir {
			err = fmt.Errorf("%w; move it to a directory only administrators can write to (e.g. under Program Files), or give --force to accept the risk", err)
		}
		if rep != nil {
			fmt.Fprintf(out, "checks of %s:\n%s", b, rep)
		}
		return &exitError{code: contract.CodeOf(err), err: fmt.Errorf("refused: %s: %w", b, err)}
	}
	return nil
}

func newServiceCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "service install|uninstall|start|stop|status|control --name NAME",
		Short: "Install baton run as a Windows service or a systemd unit, and drive it",
		Long: `Register 'baton run' as a service of the system's service manager: on Windows
a Service Control Manager service whose process is the supervisor (it stays
RUNNING across every upgrade and rollback), on Linux a systemd unit
(Type=notify-reload, ExecReload=baton upgrade). 'baton upgrade', 'rollback',
'status' and 'stop --name NAME' work on it as on any baton run.

` + exitCodesHelp,
	}
	c.AddCommand(newServiceInstallCmd(), newServiceSimpleCmd("uninstall"), newServiceSimpleCmd("start"),
		newServiceSimpleCmd("stop"), newServiceSimpleCmd("status"), newServiceControlCmd())
	return c
}

func newServiceInstallCmd() *cobra.Command {
	var si serviceInstall
	c := &cobra.Command{
		Use:   "install --name NAME --listen URL [run flags] [--start auto|manual|delayed] [--account A] -- APP [ARGS...]",
		Short: "Register a service whose process is 'baton run' with these flags",
		Long: `Register a service NAME whose process is 'baton run --name NAME <flags> -- APP
ARGS'. Every 'baton run' flag is accepted and written into the service's
command line, except on Windows --metrics and the --http-control flags,
refused (exit 2): the Windows service does not serve them yet.

Windows: an SCM service (--start auto, manual or delayed auto-start;
--account LocalSystem, LocalService, NetworkService or DOMAIN\user with
--password-file), restarted by the SCM after a failure (5s, 30s, 60s), with
an Event Log source NAME for its lifecycle events. The generations' output
goes to a rotated log file, by default %ProgramData%\baton\NAME\NAME.log
(--log-file). baton.exe and APP are checked as 'baton check' does: a
directory writable by non-administrators (a DLL could be planted there) is
refused unless --force.

Linux: a systemd unit /etc/systemd/system/NAME.service (Type=notify-reload,
ExecStart=baton run ..., ExecReload=baton upgrade --name NAME), then
'systemctl daemon-reload'.

--dry-run prints what would be registered and changes nothing.

` + exitCodesHelp,
		Example: `  baton service install --name web --listen tcp://127.0.0.1:8080 --start auto -- C:\web\web.exe -addr 127.0.0.1:8080
  baton service install --name web --listen tcp://127.0.0.1:8080 --dry-run -- /usr/local/bin/web`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkServiceName(si.run.cfg.Name); err != nil {
				return err
			}
			if si.run.configFile != "" {
				abs, err := filepath.Abs(si.run.configFile)
				if err != nil {
					return &exitError{code: contract.CodeUsage, err: err}
				}
				if err := cmd.Flags().Set("config", abs); err != nil {
					return &exitError{code: contract.CodeUsage, err: err}
				}
			}
			// The same checks as baton run's, before anything is registered.
			cfg, err := si.run.toConfig(cmd, args)
			if err != nil {
				return err
			}
			app := append([]string(nil), cfg.Command...)
			if app[0], err = absApp(app[0]); err != nil {
				return &exitError{code: contract.CodeUsage, err: err}
			}
			return installService(cmd, &si, app)
		},
	}
	f := c.Flags()
	si.run.bind(f)
	f.StringVar(&si.displayName, "display-name", "", "the service's display name (default \"baton: NAME\")")
	f.StringVar(&si.description, "description", "", "the service's description")
	f.StringVar(&si.start, "start", "auto", "start type: auto, manual or delayed (automatic, delayed; Windows)")
	f.StringVar(&si.account, "account", "LocalSystem", "the account the service runs as: LocalSystem, LocalService, NetworkService or DOMAIN\\user (Windows); a user name (Linux: User=)")
	f.StringVar(&si.passwordFile, "password-file", "", "a file holding the password of --account DOMAIN\\user (Windows)")
	f.BoolVar(&si.dryRun, "dry-run", false, "print what would be registered (Linux: the unit) and change nothing")
	f.BoolVar(&si.force, "force", false, "install even if a binary's directory is writable by other users (a DLL-planting risk)")
	return c
}

// absApp makes the app's path absolute (services do not start in the
// current directory); a bare name is looked up in PATH as baton run would.
func absApp(app string) (string, error) {
	if !strings.ContainsAny(app, `/\`) {
		if _, err := os.Stat(app); err != nil {
			return exec.LookPath(app)
		}
	}
	abs, err := filepath.Abs(app)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("the app %s: %w", app, err)
	}
	return abs, nil
}

type serviceFlags struct {
	name    string
	json    bool
	timeout time.Duration
}

func newServiceSimpleCmd(verb string) *cobra.Command {
	var f serviceFlags
	short := map[string]string{
		"uninstall": "Stop the service if it runs, then delete it and its event source (logs are kept)",
		"start":     "Start the service and wait until it serves (RUNNING)",
		"stop":      "Stop the service: every generation drains, then STOPPED",
		"status":    "Show the service manager's state and pid, and baton's own status when it runs",
	}[verb]
	c := &cobra.Command{
		Use:   verb + " --name NAME",
		Short: short,
		Long:  short + ".\n\n" + exitCodesHelp,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkServiceName(f.name); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
			defer cancel()
			out := cmd.OutOrStdout()
			switch verb {
			case "uninstall":
				return serviceUninstall(ctx, out, f)
			case "start":
				return serviceStart(ctx, out, f)
			case "stop":
				return serviceStop(ctx, out, f)
			default:
				return serviceStatusCmd(ctx, out, f)
			}
		},
	}
	c.Flags().StringVarP(&f.name, "name", "n", "", "the service's name")
	c.Flags().BoolVar(&f.json, "json", false, "print the outcome as JSON")
	c.Flags().DurationVar(&f.timeout, "timeout", 2*time.Minute, "give up waiting after this long")
	return c
}

func newServiceControlCmd() *cobra.Command {
	var f serviceFlags
	c := &cobra.Command{
		Use:   "control --name NAME CODE",
		Short: "Send a custom control code to the Windows service: 128 upgrade, 129 rollback, 130 reopen the log file",
		Long: `Send a custom control code to the Windows service NAME, as 'sc control NAME
CODE' does: 128 upgrades to the binary on disk, 129 rolls back, 130 reopens
the log file. The SCM does not wait for the outcome: it is written to the
Event Log and the supervisor's log, and an upgrade's or rollback's to
'baton status --name NAME' (last upgrade). 'baton upgrade' and 'baton
rollback' wait for it and print it.

` + exitCodesHelp,
		Args:   cobra.ExactArgs(1),
		Hidden: false,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkServiceName(f.name); err != nil {
				return err
			}
			var code uint32
			if _, err := fmt.Sscanf(args[0], "%d", &code); err != nil || code < 128 || code > 255 {
				return &exitError{code: contract.CodeUsage, err: fmt.Errorf("control code %q: give 128 (upgrade), 129 (rollback), 130 (reopen the log file), or another code 128-255", args[0])}
			}
			ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
			defer cancel()
			return serviceControl(ctx, cmd.OutOrStdout(), f, code)
		},
	}
	c.Flags().StringVarP(&f.name, "name", "n", "", "the service's name")
	c.Flags().DurationVar(&f.timeout, "timeout", 30*time.Second, "give up after this long")
	return c
}
