//go:build !windows

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/baton-go/baton/internal/contract"
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
	return &exitError{code: contract.CodeUnsupported, err: errors.New("baton service install: the systemd unit writer is not wired yet")}
}

func serviceUninstall(ctx context.Context, out io.Writer, f serviceFlags) error {
	return &exitError{code: contract.CodeUnsupported, err: errors.New("baton service uninstall: the systemd unit writer is not wired yet")}
}
