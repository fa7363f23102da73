//go:build unix && !linux && !freebsd

package supervisor

import (
	"os/exec"
	"syscall"
)

// macOS and the other BSDs have no parent-death signal; children run in
// their own process group. A supervisor killed with SIGKILL leaves them
// running there (a watchdog is still to do on these systems).
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

type spawner struct{}

func newSpawner() *spawner { return &spawner{} }

func (s *spawner) start(cmd *exec.Cmd) error { return cmd.Start() }
