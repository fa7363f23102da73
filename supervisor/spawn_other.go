//go:build unix && !linux && !freebsd

package supervisor

import (
	"os/exec"
	"syscall"
)

// macOS and the other BSDs have no parent-death signal: a watchdog process
// kills the generations' process groups if the supervisor dies.
func childProcAttr(guard string) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

const defaultGuard = GuardWatchdog

type spawner struct{}

func newSpawner() *spawner { return &spawner{} }

func (s *spawner) start(cmd *exec.Cmd) error { return cmd.Start() }
