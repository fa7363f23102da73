//go:build !windows

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/systemdunit"
	"github.com/baton-go/baton/supervisor"
	"github.com/spf13/cobra"
)

// runAsService: only a Windows service runs baton run --as-service.
func runAsService(supervisor.Config) error {
	return &exitError{code: contract.CodeUsage, err: errors.New("--as-service is for the Windows service's process; under systemd use baton run")}
}

func serviceControl(ctx context.Context, out io.Writer, f serviceFlags, code uint32) error {
	return &exitError{code: contract.CodeUnsupported, err: errors.New("control codes are Windows's; use baton upgrade, rollback or systemctl reload")}
}

// systemctl runs systemctl with args, its output to out.
func systemctl(ctx context.Context, out io.Writer, args ...string) error {
	if _, err := exec.LookPath("systemctl"); err != nil {
		return &exitError{code: contract.CodeUnsupported, err: errors.New("systemctl not found: baton service needs systemd")}
	}
	c := exec.CommandContext(ctx, "systemctl", args...)
	c.Stdout, c.Stderr = out, os.Stderr
	if err := c.Run(); err != nil {
		return &exitError{code: contract.CodeFailed, err: fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err)}
	}
	return nil
}

func serviceStart(ctx context.Context, out io.Writer, f serviceFlags) error {
	if err := systemctl(ctx, out, "start", f.name+".service"); err != nil {
		return err
	}
	fmt.Fprintf(out, "started %s\n", f.name)
	return nil
}

func serviceStop(ctx context.Context, out io.Writer, f serviceFlags) error {
	if err := systemctl(ctx, out, "stop", f.name+".service"); err != nil {
		return err
	}
	fmt.Fprintf(out, "stopped %s\n", f.name)
	return nil
}

func serviceStatusCmd(ctx context.Context, out io.Writer, f serviceFlags) error {
	if _, err := exec.LookPath("systemctl"); err != nil {
		return &exitError{code: contract.CodeUnsupported, err: errors.New("systemctl not found: baton service needs systemd")}
	}
	b, _ := exec.CommandContext(ctx, "systemctl", "is-active", f.name+".service").Output()
	state := strings.TrimSpace(string(b))
	if f.json {
		printJSON(out, map[string]any{"name": f.name, "state": state})
		return nil
	}
	fmt.Fprintf(out, "service     %s: %s (systemctl is-active)\n", f.name, state)
	if state != "active" && state != "reloading" {
		return nil
	}
	return runStatus(out, commonFlags{name: f.name, timeout: f.timeout})
}

func installService(cmd *cobra.Command, si *serviceInstall, app []string) error {
	out := cmd.OutOrStdout()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec, err := unitSpec(cmd, si, app)
	if err != nil {
		return err
	}
	if si.dryRun {
		text, err := systemdunit.Render(spec)
		if err != nil {
			return &exitError{code: contract.CodeUsage, err: err}
		}
		fmt.Fprintf(out, "# %s\n%s", systemdunit.UnitPath(spec.Name), text)
		return nil
	}
	if err := checkServiceBinaries(ctx, out, []string{spec.ExecStart[0], app[0]}, si.force); err != nil {
		return err
	}
	if err := systemdunit.Install(ctx, spec, out); err != nil {
		code := contract.CodeFailed
		switch {
		case errors.Is(err, systemdunit.ErrNotOurs):
			code = contract.CodeUsage
		case errors.Is(err, fs.ErrPermission):
			code = contract.CodeUnreachable
			err = fmt.Errorf("%w (run it as root)", err)
		}
		return &exitError{code: code, err: err}
	}
	if si.start == "auto" || si.start == "delayed" {
		fmt.Fprintf(out, "enable and start it: systemctl enable --now %s.service\n", spec.Name)
	} else {
		fmt.Fprintf(out, "start it: baton service start --name %s\n", spec.Name)
	}
	return nil
}

// unitSpec is the systemd unit of an install: ExecStart baton run <flags>
// -- app, ExecReload baton upgrade --name N.
func unitSpec(cmd *cobra.Command, si *serviceInstall, app []string) (systemdunit.Spec, error) {
	name := si.run.cfg.Name
	exe, err := os.Executable()
	if err != nil {
		return systemdunit.Spec{}, &exitError{code: contract.CodeInternal, err: err}
	}
	if exe, err = filepath.Abs(exe); err != nil {
		return systemdunit.Spec{}, &exitError{code: contract.CodeInternal, err: err}
	}
	skip := []string{"name"}
	start := []string{exe, "run", "--name=" + name}
	if lf := si.run.cfg.LogFile; lf != "" {
		abs, err := filepath.Abs(lf)
		if err != nil {
			return systemdunit.Spec{}, &exitError{code: contract.CodeUsage, err: err}
		}
		skip = append(skip, "log-file")
		start = append(start, "--log-file="+abs)
	}
	start = append(start, si.run.args(cmd.Flags(), skip...)...)
	start = append(append(start, "--"), app...)
	spec := systemdunit.Spec{Name: name, Description: si.description, ExecStart: start,
		ExecReload: []string{exe, "upgrade", "--name", name}}
	switch a := si.account; strings.ToLower(a) {
	case "", "localsystem", "root":
	case "localservice", "networkservice":
		return spec, &exitError{code: contract.CodeUsage, err: fmt.Errorf("--account %s is a Windows account; give a user name (the unit's User=)", a)}
	default:
		spec.User = a
	}
	if si.passwordFile != "" {
		return spec, &exitError{code: contract.CodeUsage, err: errors.New("--password-file is for a Windows account")}
	}
	return spec, nil
}

func serviceUninstall(ctx context.Context, out io.Writer, f serviceFlags) error {
	if err := systemdunit.Uninstall(ctx, f.name, out); err != nil {
		code := contract.CodeFailed
		switch {
		case errors.Is(err, fs.ErrNotExist):
			code = contract.CodeUnreachable
		case errors.Is(err, systemdunit.ErrNotOurs):
			code = contract.CodeUsage
		case errors.Is(err, fs.ErrPermission):
			code = contract.CodeUnreachable
		}
		return &exitError{code: code, err: err}
	}
	fmt.Fprintf(out, "uninstalled %s\n", f.name)
	return nil
}
