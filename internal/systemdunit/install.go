package systemdunit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/baton-go/baton/internal/atomicfile"
	"github.com/baton-go/baton/internal/ctl"
)

// Dir is where units are installed; tests point it at a temporary
// directory.
var Dir = "/etc/systemd/system"

// BootedPath exists when systemd is the running service manager (the
// sd_booted(3) test); without it nothing calls systemctl. Tests point it
// at a directory of their own.
var BootedPath = "/run/systemd/system"

// Systemctl runs `systemctl args...` with its output on out; tests replace
// it.
var Systemctl = func(ctx context.Context, out io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, "systemctl", args...)
	cmd.Stdout, cmd.Stderr = out, out
	return cmd.Run()
}

// ErrNotOurs: the unit file exists but baton did not write it (it has no
// Marker line); Install does not replace it and Uninstall does not remove
// it.
var ErrNotOurs = errors.New("unit file not written by baton")

// ErrNoVerifier: systemd-analyze is not installed, so Verify could not
// check the unit.
var ErrNoVerifier = errors.New("systemd-analyze not found: the unit cannot be verified here")

// Install writes the unit of s to UnitPath(s.Name) (atomically, mode 0644)
// and runs `systemctl daemon-reload` when systemd is running, or says on
// out that it did not. An existing unit is replaced only when baton wrote
// it: otherwise the error wraps ErrNotOurs and nothing changes. It neither
// enables nor starts the service.
func Install(ctx context.Context, s Spec, out io.Writer) error {
	if out == nil {
		out = io.Discard
	}
	text, err := Render(s)
	if err != nil {
		return err
	}
	p := UnitPath(s.Name)
	old, err := os.ReadFile(p)
	switch {
	case err == nil && !ours(old):
		return fmt.Errorf("%s: %w (it has no %q line); remove it yourself or choose another name", p, ErrNotOurs, Marker)
	case err == nil && string(old) == text:
		fmt.Fprintf(out, "%s is up to date\n", p)
	case err == nil || errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(Dir, 0o755); err != nil {
			return err
		}
		if err := atomicfile.Write(p, 0o644, func(w io.Writer) error {
			_, err := io.WriteString(w, text)
			return err
		}); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
		fmt.Fprintf(out, "wrote %s\n", p)
	default:
		return err
	}
	return daemonReload(ctx, out)
}

// Uninstall stops and disables the service name (systemctl, when systemd
// is running), removes its unit file and runs `systemctl daemon-reload`.
// A unit baton did not write is left alone (the error wraps ErrNotOurs); a
// missing one is an error wrapping fs.ErrNotExist. When systemd is not
// running, the enablement links that point at the unit are removed
// instead, so none is left dangling.
func Uninstall(ctx context.Context, name string, out io.Writer) error {
	if out == nil {
		out = io.Discard
	}
	if err := ctl.CheckName(name); err != nil {
		return fmt.Errorf("service name: %w", err)
	}
	p := UnitPath(name)
	data, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no unit %s to uninstall: %w", p, err)
		}
		return err
	}
	if !ours(data) {
		return fmt.Errorf("%s: %w (it has no %q line); left as it is", p, ErrNotOurs, Marker)
	}
	unit := name + ".service"
	if booted() {
		// stop waits for the drain (TimeoutStopSec); the file stays if it fails.
		if err := Systemctl(ctx, out, "stop", unit); err != nil {
			return fmt.Errorf("systemctl stop %s: %w (the unit file is left in place)", unit, err)
		}
		fmt.Fprintf(out, "stopped %s\n", unit)
		if err := Systemctl(ctx, out, "disable", unit); err != nil {
			return fmt.Errorf("systemctl disable %s: %w (the unit file is left in place)", unit, err)
		}
		fmt.Fprintf(out, "disabled %s\n", unit)
	} else {
		fmt.Fprintf(out, "systemd is not running (no %s): did not stop or disable %s\n", BootedPath, unit)
		for _, l := range removeLinks(p) {
			fmt.Fprintf(out, "removed %s\n", l)
		}
	}
	if err := os.Remove(p); err != nil {
		return err
	}
	_ = atomicfile.SyncDir(Dir)
	fmt.Fprintf(out, "removed %s\n", p)
	return daemonReload(ctx, out)
}

// Verify runs `systemd-analyze verify` on a temporary copy of unitText. It
// returns ErrNoVerifier when systemd-analyze is not installed, and an error
// with systemd's words when it fails or says anything about the unit (an
// unknown setting is only a warning to systemd, and exit status 0).
// systemd-analyze checks, among others, that the programs of ExecStart and
// ExecReload exist and are executable.
func Verify(ctx context.Context, unitText string) error {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		return fmt.Errorf("%w (%v)", ErrNoVerifier, err)
	}
	dir, err := os.MkdirTemp("", "baton-unit-verify-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	const name = "baton-unit-verify.service"
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, []byte(unitText), 0o644); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, tool, "verify", "--man=no", f)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	runErr := cmd.Run()
	var about []string
	for _, l := range strings.Split(buf.String(), "\n") {
		l = strings.ReplaceAll(l, f, "unit")
		if strings.Contains(l, name) || strings.HasPrefix(l, "unit:") {
			if len(about) == 0 || about[len(about)-1] != l {
				about = append(about, l)
			}
		}
	}
	switch {
	case runErr != nil && len(about) == 0:
		return fmt.Errorf("systemd-analyze verify: %v: %s", runErr, strings.TrimSpace(buf.String()))
	case runErr != nil || len(about) > 0:
		return fmt.Errorf("systemd-analyze verify: %s", strings.Join(about, "; "))
	}
	return nil
}

// ours reports whether a unit file holds the Marker line.
func ours(data []byte) bool {
	for _, l := range strings.Split(string(data), "\n") {
		if strings.TrimRight(l, " \t\r") == Marker {
			return true
		}
	}
	return false
}

func booted() bool {
	fi, err := os.Stat(BootedPath)
	return err == nil && fi.IsDir()
}

func daemonReload(ctx context.Context, out io.Writer) error {
	if !booted() {
		fmt.Fprintf(out, "systemd is not running (no %s): did not run systemctl daemon-reload\n", BootedPath)
		return nil
	}
	if err := Systemctl(ctx, out, "daemon-reload"); err != nil {
		return fmt.Errorf("systemctl daemon-reload: %w", err)
	}
	fmt.Fprintln(out, "ran systemctl daemon-reload")
	return nil
}

// removeLinks removes the symlinks `systemctl enable` made to unit path p
// (Dir/*.wants/, Dir/*.requires/) and returns them.
func removeLinks(p string) []string {
	var removed []string
	for _, pat := range []string{"*.wants", "*.requires"} {
		links, _ := filepath.Glob(filepath.Join(Dir, pat, filepath.Base(p)))
		for _, l := range links {
			if t, err := os.Readlink(l); err == nil && t == p && os.Remove(l) == nil {
				removed = append(removed, l)
			}
		}
	}
	return removed
}
