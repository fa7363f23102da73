package proctest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/baton-go/baton"
	"github.com/baton-go/baton/internal/ctl"
)

// Service is a running baton service (first generation started by us)
// driven through the real `baton` CLI.
type Service struct {
	Name    string
	Baton   string // path of the baton CLI
	Env     []string
	Cmd     *exec.Cmd
	Tracker *Tracker
}

// Start runs bin with args as the first generation of service name and
// waits until it answers `status` as serving. logTo receives its output
// (nil: discarded).
func Start(ctx context.Context, t *Tracker, batonCLI, name string, env []string, logTo *os.File, bin string, args ...string) (*Service, error) {
	return StartCmd(ctx, t, batonCLI, name, env, logTo, nil, bin, args...)
}

// StartCmd is Start with extra files for the child (fd 3 onwards).
func StartCmd(ctx context.Context, t *Tracker, batonCLI, name string, env []string, logTo *os.File, extra []*os.File, bin string, args ...string) (*Service, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.ExtraFiles = extra
	if logTo != nil {
		cmd.Stdout, cmd.Stderr = logTo, logTo
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	t.Track(cmd.Process.Pid)
	s := &Service{Name: name, Baton: batonCLI, Env: env, Cmd: cmd, Tracker: t}
	for {
		st, err := s.Status(ctx)
		if err == nil && st.Phase == baton.PhaseServing {
			return s, nil
		}
		if _, gone := t.Exited(cmd.Process.Pid); gone {
			return nil, fmt.Errorf("%s exited during start-up", bin)
		}
		select {
		case <-ctx.Done():
			cmd.Process.Kill()
			return nil, fmt.Errorf("%s not serving: %v (%w)", bin, err, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Status asks the serving generation for its status (in-process client).
func (s *Service) Status(ctx context.Context) (baton.Status, error) {
	var st baton.Status
	resp, err := ctl.Do(ctx, s.Name, ctl.Request{Op: ctl.OpStatus})
	if err != nil {
		return st, err
	}
	if !resp.OK {
		return st, errors.New(resp.Error)
	}
	return st, resp.Decode(&st)
}

// UpgradeReport is what `baton upgrade --json` printed, with its exit code.
type UpgradeReport struct {
	ExitCode  int                   `json:"-"`
	Stderr    string                `json:"-"`
	Triggered time.Time             `json:"-"` // when the CLI was started
	Returned  time.Time             `json:"-"` // when it exited
	OK        bool                  `json:"ok"`
	Code      string                `json:"code"`
	Error     string                `json:"error"`
	Result    *baton.UpgradeResult  `json:"result"`
	ChildExit *baton.ChildExitError `json:"child_exit"`
}

// Upgrade runs `baton upgrade --name NAME --json` and decodes its report.
func (s *Service) Upgrade(ctx context.Context, extra ...string) (UpgradeReport, error) {
	args := append([]string{"upgrade", "--name", s.Name, "--json"}, extra...)
	cmd := exec.CommandContext(ctx, s.Baton, args...)
	cmd.Env = s.Env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	rep := UpgradeReport{Triggered: time.Now()}
	err := cmd.Run()
	rep.Returned = time.Now()
	rep.Stderr = stderr.String()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		rep.ExitCode = ee.ExitCode()
	} else if err != nil {
		return rep, err
	}
	if stdout.Len() > 0 {
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			return rep, fmt.Errorf("baton upgrade printed no JSON report: %v\n%s%s", err, stdout.String(), stderr.String())
		}
	}
	if rep.Result != nil {
		s.Tracker.Track(rep.Result.PID)
	}
	return rep, nil
}
