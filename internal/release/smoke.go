package release

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// checkSmoke runs the smoke command and requires exit 0 within the timeout.
func checkSmoke(ctx context.Context, r *Report, bin string, o CheckOptions) {
	timeout := o.SmokeTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	args := strings.Fields(o.Smoke)
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "{bin}", bin)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var stdout, stderr tail
	stdout.n, stderr.n = 2048, 2048
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Dir = os.TempDir()
	cmd.Env = smokeEnv(os.Environ())
	started, done := killGroup(cmd) // the whole group dies on timeout
	defer done()
	// Output pipes held by a stray grandchild must not keep us waiting.
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	err := cmd.Start()
	if err == nil {
		started()
		err = cmd.Wait()
	}
	took := time.Since(start).Round(time.Millisecond)
	if err == nil {
		r.add("smoke", StatusOK, nil, "%q exited 0 in %v", o.Smoke, took)
		return
	}
	var ee *exec.ExitError
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		err = fmt.Errorf("%w: %q did not finish within %v and was killed (with its process group)", ErrSmokeRun, o.Smoke, timeout)
	case errors.As(err, &ee):
		err = fmt.Errorf("%w: %q exited with %s", ErrSmokeRun, o.Smoke, exitDesc(ee))
	case isBusy(err):
		err = busyError(bin, fmt.Errorf("smoke run %q: %v", o.Smoke, err))
	default:
		err = fmt.Errorf("%w: %q could not start: %v", ErrSmokeRun, o.Smoke, err)
	}
	if t := stderr.String(); t != "" {
		err = fmt.Errorf("%w; stderr (tail): %s", err, t)
	} else if t := stdout.String(); t != "" {
		err = fmt.Errorf("%w; stdout (tail): %s", err, t)
	}
	r.add("smoke", StatusFailed, err, "")
}

func exitDesc(ee *exec.ExitError) string {
	if c := ee.ExitCode(); c >= 0 {
		return fmt.Sprintf("exit code %d", c)
	}
	return ee.ProcessState.String()
}

// busyError wraps ErrBusy around err and names the processes holding path.
func busyError(path string, err error) error {
	hs, herr := Holders(path)
	switch {
	case herr != nil:
		return fmt.Errorf("%w: %s: %v (cannot tell which process holds it: %v)", ErrBusy, path, err, herr)
	case len(hs) == 0:
		return fmt.Errorf("%w: %s: %v (no process found holding it)", ErrBusy, path, err)
	}
	return fmt.Errorf("%w: %s: %v: %s", ErrBusy, path, err, describeHolders(hs))
}

// smokeEnv is the CLI's environment without what would make the smoke run
// believe it is a service generation: systemd's socket activation and
// notify socket, baton's handoff, link and supervisor variables.
func smokeEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LISTEN_") || strings.HasPrefix(k, "BATON_") || k == "NOTIFY_SOCKET" || strings.HasPrefix(k, "WATCHDOG_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}
