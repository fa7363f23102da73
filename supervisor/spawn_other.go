//go:build unix && !linux

package supervisor

import (
	"os/exec"
	"syscall"
)

// Outside Linux there is no Pdeathsig; children run in their own process
// group. (A watchdog pipe that makes them exit with the supervisor is still
// to do on these systems.)
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

type spawner struct{}

func newSpawner() *spawner { return &spawner{} }

func (s *spawner) start(cmd *exec.Cmd) error { return cmd.Start() }
