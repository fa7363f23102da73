package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/wine"
	"github.com/baton-go/baton/internal/winsvc"
	"github.com/baton-go/baton/supervisor"
	"github.com/spf13/cobra"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"
)

// serviceDir is the service's own directory: its log files and the
// generations' binary copies (%ProgramData%\baton\NAME).
func serviceDir(name string) string {
	pd := os.Getenv("ProgramData")
	if pd == "" {
		pd = `C:\ProgramData`
	}
	return filepath.Join(pd, "baton", name)
}

// serviceDirSDDL: SYSTEM and Administrators full control, not inherited
// from %ProgramData% (where any user may create files); the service's
// account gets modify rights when it is not LocalSystem.
func serviceDirSDDL(account string) string {
	sd := "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"
	switch strings.ToLower(account) {
	case "", "localsystem":
	case "localservice", `nt authority\localservice`:
		sd += "(A;OICI;0x1301bf;;;LS)"
	case "networkservice", `nt authority\networkservice`:
		sd += "(A;OICI;0x1301bf;;;NS)"
	}
	return sd
}

// makeServiceDir creates dir with serviceDirSDDL (a user account is added
// by its SID).
func makeServiceDir(dir, account string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	sddl := serviceDirSDDL(account)
	if a := startName(account); a != "" && !strings.HasPrefix(strings.ToLower(a), `nt authority\`) {
		sid, _, _, err := windows.LookupSID("", a)
		if err != nil {
			return fmt.Errorf("account %s: %w", a, err)
		}
		sddl += "(A;OICI;0x1301bf;;;" + sid.String() + ")"
	}
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return err
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return err
	}
	return windows.SetNamedSecurityInfo(dir, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
}

// startName is the SCM's account name for --account ("" = LocalSystem).
func startName(account string) string {
	switch strings.ToLower(account) {
	case "", "localsystem":
		return ""
	case "localservice":
		return `NT AUTHORITY\LocalService`
	case "networkservice":
		return `NT AUTHORITY\NetworkService`
	}
	return account
}

func installService(cmd *cobra.Command, si *serviceInstall, app []string) error {
	if err := refuseFlags(cmd.Flags(), windowsServiceUnserved,
		"the Windows service does not serve metrics or HTTP control yet (it would refuse to start): leave them out, or run baton run in a console"); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	name := si.run.cfg.Name
	exe, err := os.Executable()
	if err != nil {
		return &exitError{code: contract.CodeInternal, err: err}
	}
	if exe, err = filepath.Abs(exe); err != nil {
		return &exitError{code: contract.CodeInternal, err: err}
	}
	logFile := si.run.cfg.LogFile
	if logFile == "" {
		logFile = filepath.Join(serviceDir(name), name+".log")
	} else if logFile, err = filepath.Abs(logFile); err != nil {
		return &exitError{code: contract.CodeUsage, err: err}
	}
	password := ""
	account := si.account
	if startName(account) != "" && !strings.HasPrefix(strings.ToLower(startName(account)), `nt authority\`) {
		if !strings.Contains(account, `\`) && !strings.Contains(account, "@") {
			return &exitError{code: contract.CodeUsage, err: fmt.Errorf("--account %q: use LocalSystem, LocalService, NetworkService or DOMAIN\\user (.\\user for a local one)", account)}
		}
		if si.passwordFile == "" {
			return &exitError{code: contract.CodeUsage, err: fmt.Errorf("--account %s needs --password-file", account)}
		}
		b, err := os.ReadFile(si.passwordFile)
		if err != nil {
			return &exitError{code: contract.CodeUsage, err: err}
		}
		password = strings.TrimRight(string(b), "\r\n")
	} else if si.passwordFile != "" {
		return &exitError{code: contract.CodeUsage, err: fmt.Errorf("--password-file is for a user account; %s has no password", account)}
	}
	p, err := si.plan(exe, si.run.args(cmd.Flags(), "name", "log-file"), app, logFile)
	if err != nil {
		return err
	}
	if si.dryRun {
		fmt.Fprint(out, p)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := checkServiceBinaries(ctx, out, []string{exe, app[0]}, si.force); err != nil {
		return err
	}
	m, err := mgr.Connect()
	if err != nil {
		return scmError("connecting to the service manager", err)
	}
	defer m.Disconnect()
	if s, err := m.OpenService(name); err == nil {
		s.Close()
		return &exitError{code: contract.CodeUsage, err: fmt.Errorf("a service %s is installed already (baton service uninstall --name %s first)", name, name)}
	}
	if err := makeServiceDir(filepath.Dir(logFile), account); err != nil {
		return &exitError{code: contract.CodeFailed, err: fmt.Errorf("the service's directory %s: %w", filepath.Dir(logFile), err)}
	}
	mc := mgr.Config{
		DisplayName:      p.DisplayName,
		Description:      p.Description,
		StartType:        mgr.StartAutomatic,
		ErrorControl:     mgr.ErrorNormal,
		ServiceStartName: startName(account),
		Password:         password,
	}
	switch p.Start {
	case "manual":
		mc.StartType = mgr.StartManual
	case "delayed":
		mc.DelayedAutoStart = true
	}
	s, err := m.CreateService(name, exe, mc, p.Args...)
	if err != nil {
		return scmError("creating the service", err)
	}
	defer s.Close()
	undo := func(err error) error {
		s.Delete()
		eventlog.Remove(name)
		return err
	}
	var actions []mgr.RecoveryAction
	for _, d := range p.Recovery {
		actions = append(actions, mgr.RecoveryAction{Type: mgr.ServiceRestart, Delay: d})
	}
	// A STOPPED with an exit code (the app kept failing) is a failure too.
	err = s.SetRecoveryActions(actions, 24*60*60)
	if err == nil {
		err = s.SetRecoveryActionsOnNonCrashFailures(true)
	}
	if err != nil {
		if v, isWine := wine.Version(); isWine && errors.Is(err, windows.ERROR_INVALID_LEVEL) {
			// Wine 8 implements neither failure-actions level.
			fmt.Fprintf(out, "warning: recovery actions not set: Wine %s does not implement them (%v)\n", v, err)
		} else {
			return undo(scmError("setting the recovery actions", err))
		}
	}
	if err := eventlog.InstallAsEventCreate(name, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil {
		return undo(scmError("registering the event source", err))
	}
	fmt.Fprintf(out, "installed service %s (%s start, account %s)\n  %s\nlogs: %s; events: Application log, source %s\nstart it: baton service start --name %s\n",
		name, p.Start, p.Account, windowsCommandLine(append([]string{p.Exe}, p.Args...)), p.LogFile, name, name)
	return nil
}

func scmError(what string, err error) error {
	code := contract.CodeFailed
	switch {
	case errors.Is(err, windows.ERROR_ACCESS_DENIED):
		code = contract.CodeUnreachable
		err = fmt.Errorf("%w (run it as an administrator)", err)
	case errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST):
		code = contract.CodeUnreachable
	}
	return &exitError{code: code, err: fmt.Errorf("%s: %w", what, err)}
}

func openService(name string) (*mgr.Mgr, *mgr.Service, error) {
	m, err := mgr.Connect()
	if err != nil {
		return nil, nil, scmError("connecting to the service manager", err)
	}
	s, err := m.OpenService(name)
	if err != nil {
		m.Disconnect()
		return nil, nil, scmError("service "+name, err)
	}
	return m, s, nil
}

// waitState polls the service until it is in want (or stopped, when it
// failed to start).
func waitState(ctx context.Context, s *mgr.Service, want svc.State) (svc.Status, error) {
	for {
		st, err := s.Query()
		if err != nil {
			return st, scmError("querying the service", err)
		}
		if st.State == want || (st.State == svc.Stopped && want == svc.Running) {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, &exitError{code: contract.CodeTimeout, err: fmt.Errorf("the service is %s, not %s, after the timeout", stateName(st.State), stateName(want))}
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func stateName(s svc.State) string { return winsvc.State(s).String() }

func exitText(st svc.Status) string {
	if st.Win32ExitCode == uint32(windows.ERROR_SERVICE_SPECIFIC_ERROR) {
		return fmt.Sprintf("service-specific exit code %d", st.ServiceSpecificExitCode)
	}
	if st.Win32ExitCode == 0 {
		return "exit code 0"
	}
	return fmt.Sprintf("exit code %d (%v)", st.Win32ExitCode, windows.Errno(st.Win32ExitCode))
}

func serviceUninstall(ctx context.Context, out io.Writer, f serviceFlags) error {
	m, s, err := openService(f.name)
	if err != nil {
		// No service: still remove a stale event source.
		if eventlog.Remove(f.name) == nil {
			fmt.Fprintf(out, "removed the event source %s (no service %s)\n", f.name, f.name)
			return nil
		}
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	st, err := s.Query()
	if err != nil {
		return scmError("querying the service", err)
	}
	if st.State != svc.Stopped {
		if st.State != svc.StopPending {
			if _, err := s.Control(svc.Stop); err != nil {
				return scmError("stopping the service", err)
			}
		}
		if st, err = waitState(ctx, s, svc.Stopped); err != nil {
			return err
		}
		fmt.Fprintf(out, "stopped %s (%s)\n", f.name, exitText(st))
	}
	if err := s.Delete(); err != nil {
		return scmError("deleting the service", err)
	}
	if err := eventlog.Remove(f.name); err != nil {
		fmt.Fprintf(out, "warning: removing the event source %s: %v\n", f.name, err)
	}
	fmt.Fprintf(out, "uninstalled %s (the service directory %s, with the default log files, is kept)\n", f.name, serviceDir(f.name))
	return nil
}

func serviceStart(ctx context.Context, out io.Writer, f serviceFlags) error {
	m, s, err := openService(f.name)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	if err := s.Start(); err != nil {
		return scmError("starting the service", err)
	}
	st, err := waitState(ctx, s, svc.Running)
	if err != nil {
		return err
	}
	if st.State != svc.Running {
		return &exitError{code: contract.CodeFailed, err: fmt.Errorf("%s did not start: %s, %s (see the Event Log, source %s)", f.name, stateName(st.State), exitText(st), f.name)}
	}
	fmt.Fprintf(out, "started %s (pid %d)\n", f.name, st.ProcessId)
	return nil
}

func serviceStop(ctx context.Context, out io.Writer, f serviceFlags) error {
	m, s, err := openService(f.name)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	st, err := s.Query()
	if err != nil {
		return scmError("querying the service", err)
	}
	if st.State == svc.Stopped {
		fmt.Fprintf(out, "%s is not running\n", f.name)
		return nil
	}
	if _, err := s.Control(svc.Stop); err != nil {
		return scmError("stopping the service", err)
	}
	if st, err = waitState(ctx, s, svc.Stopped); err != nil {
		return err
	}
	fmt.Fprintf(out, "stopped %s (%s)\n", f.name, exitText(st))
	return nil
}

// serviceStatusReport is `baton service status --json`.
type serviceStatusReport struct {
	Name            string          `json:"name"`
	State           string          `json:"state"`
	PID             uint32          `json:"pid,omitempty"`
	Win32ExitCode   uint32          `json:"win32_exit_code"`
	ServiceExitCode uint32          `json:"service_exit_code"`
	Baton           json.RawMessage `json:"baton,omitempty"`
	BatonError      string          `json:"baton_error,omitempty"`
}

func serviceStatusCmd(ctx context.Context, out io.Writer, f serviceFlags) error {
	m, s, err := openService(f.name)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	st, err := s.Query()
	if err != nil {
		return scmError("querying the service", err)
	}
	rep := serviceStatusReport{Name: f.name, State: stateName(st.State), PID: st.ProcessId,
		Win32ExitCode: st.Win32ExitCode, ServiceExitCode: st.ServiceSpecificExitCode}
	if f.json {
		if st.State == svc.Running {
			resp, err := ctl.Do(ctx, f.name, ctl.Request{Op: ctl.OpStatus})
			switch {
			case err != nil:
				rep.BatonError = err.Error()
			case !resp.OK:
				rep.BatonError = resp.Error
			default:
				rep.Baton = resp.Result
			}
		}
		printJSON(out, rep)
		return nil
	}
	fmt.Fprintf(out, "service     %s: %s", f.name, rep.State)
	if st.ProcessId != 0 {
		fmt.Fprintf(out, " (pid %d)", st.ProcessId)
	}
	if st.State == svc.Stopped {
		fmt.Fprintf(out, ", last %s", exitText(st))
	}
	fmt.Fprintln(out)
	if st.State != svc.Running {
		return nil
	}
	return runStatus(out, commonFlags{name: f.name, timeout: f.timeout})
}

func serviceControl(ctx context.Context, out io.Writer, f serviceFlags, code uint32) error {
	m, s, err := openService(f.name)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	st, err := s.Control(svc.Cmd(code))
	if err != nil {
		return scmError(fmt.Sprintf("sending control code %d", code), err)
	}
	what := map[uint32]string{128: "upgrade", 129: "rollback", 130: "reopen the log file"}[code]
	if what == "" {
		what = "custom"
	}
	if q, err := s.Query(); err == nil {
		st = q // Control's answer has no pid
	}
	fmt.Fprintf(out, "sent control code %d (%s) to %s (%s, pid %d); the outcome goes to the Event Log, the supervisor's log and baton status\n",
		code, what, f.name, stateName(st.State), st.ProcessId)
	return nil
}

// runAsService is `baton run --as-service`: the process the SCM started.
func runAsService(cfg supervisor.Config) error {
	name := cfg.Name
	if cfg.LogFile == "" {
		cfg.LogFile = filepath.Join(serviceDir(name), name+".log")
	}
	if err := os.MkdirAll(filepath.Dir(cfg.LogFile), 0o700); err != nil {
		return &exitError{code: contract.CodeFailed, err: err}
	}
	if os.Getenv(contract.EnvRuntimeDir) == "" {
		os.Setenv(contract.EnvRuntimeDir, filepath.Join(serviceDir(name), "run"))
	}
	var handlers []slog.Handler
	slogFile := &reopenFile{path: supervisorLogName(cfg.LogFile)}
	if err := slogFile.reopen(); err == nil {
		defer slogFile.Close()
		handlers = append(handlers, slog.NewTextHandler(slogFile, nil))
	}
	el, elErr := eventlog.Open(name)
	if elErr == nil {
		defer el.Close()
		handlers = append(handlers, &eventHandler{el: el})
	}
	log := slog.New(teeHandler(handlers)).With("supervisor", name)
	if elErr == nil {
		// Every lifecycle record (baton events) goes to the Event Log too,
		// ids 100 and up (eventLogIDs), the record's JSON in the text.
		fctx, fstop := context.WithCancel(context.Background())
		fdone := forwardEvents(fctx, el, events.Path(os.Getenv(contract.EnvRuntimeDir), name), log)
		defer func() { fstop(); <-fdone }() // before el.Close: the last records are written
	}
	cfg.Logger = log
	h := &winsvc.Handler{
		New: func() (winsvc.Supervisor, error) {
			s, err := supervisor.New(cfg, io.Discard)
			if err != nil {
				return nil, err
			}
			return serviceSupervisor{s, slogFile}, nil
		},
		Log: log,
	}
	if err := svc.Run(name, &svcAdapter{h: h}); err != nil {
		return &exitError{code: contract.CodeFailed, err: fmt.Errorf("not started by the service manager (run it with baton service start --name %s): %w", name, err)}
	}
	return nil
}

// serviceSupervisor reopens the supervisor's own log too on code 130.
type serviceSupervisor struct {
	*supervisor.Supervisor
	slogFile *reopenFile
}

func (s serviceSupervisor) ReopenLog() error {
	if err := s.slogFile.reopen(); err != nil {
		return err
	}
	return s.Supervisor.ReopenLog()
}

// svcAdapter is winsvc.Handler as an svc.Handler.
type svcAdapter struct{ h *winsvc.Handler }

func (a *svcAdapter) Execute(_ []string, r <-chan svc.ChangeRequest, s chan<- svc.Status) (bool, uint32) {
	a.h.Report = func(st winsvc.Status) {
		if st.State == winsvc.Stopped {
			return // svc.Run reports it with the exit code once Execute returns
		}
		out := svc.Status{State: svc.State(st.State), CheckPoint: st.CheckPoint, WaitHint: uint32(st.WaitHint / time.Millisecond)}
		if st.AcceptStop {
			out.Accepts = svc.AcceptStop | svc.AcceptShutdown
		}
		s <- out
	}
	reqs := make(chan winsvc.Cmd)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case c := <-r:
				select {
				case reqs <- winsvc.Cmd(c.Cmd):
				case <-done:
					return
				}
			case <-done:
				return
			}
		}
	}()
	return a.h.Execute(reqs)
}

// reopenFile is an append-only file that can be reopened at its path.
type reopenFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func (r *reopenFile) reopen() error {
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	r.mu.Lock()
	old := r.f
	r.f = f
	r.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (r *reopenFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return len(p), nil
	}
	return r.f.Write(p)
}

func (r *reopenFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// eventHandler writes log records to the Event Log: Info, Warning, Error
// events (ids 1, 2, 3), the text being the message and its attributes.
type eventHandler struct {
	el    *eventlog.Log
	attrs []slog.Attr
}

func (h *eventHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *eventHandler) Handle(ctx context.Context, r slog.Record) error {
	var b bytes.Buffer
	th := slog.NewTextHandler(&b, &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
			return slog.Attr{}
		}
		return a
	}}).WithAttrs(h.attrs)
	if err := th.Handle(ctx, r); err != nil {
		return err
	}
	msg := strings.TrimSpace(b.String())
	switch {
	case r.Level >= slog.LevelError:
		return h.el.Error(3, msg)
	case r.Level >= slog.LevelWarn:
		return h.el.Warning(2, msg)
	}
	return h.el.Info(1, msg)
}

func (h *eventHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &eventHandler{el: h.el, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *eventHandler) WithGroup(string) slog.Handler { return h }

// tee sends each record to every handler.
type tee []slog.Handler

func teeHandler(hs []slog.Handler) slog.Handler { return tee(hs) }

func (t tee) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range t {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (t tee) Handle(ctx context.Context, r slog.Record) error {
	var first error
	for _, h := range t {
		if h.Enabled(ctx, r.Level) {
			if err := h.Handle(ctx, r.Clone()); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

func (t tee) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(tee, len(t))
	for i, h := range t {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (t tee) WithGroup(g string) slog.Handler {
	out := make(tee, len(t))
	for i, h := range t {
		out[i] = h.WithGroup(g)
	}
	return out
}
