//go:build linux || freebsd

package supervisor

import (
	"os/exec"
	"runtime"
	"syscall"
)

// childProcAttr: its own process group (a terminal's Ctrl-C reaches the
// supervisor only, which drains in order), and SIGKILL when the supervisor
// dies, even by SIGKILL, so that no generation outlives it.
func childProcAttr(guard string) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if guard == GuardPdeathsig {
		a.Pdeathsig = syscall.SIGKILL
	}
	return a
}

const defaultGuard = GuardPdeathsig

// spawner starts processes from one OS thread that never exits: Linux
// delivers Pdeathsig when the *thread* that forked the child exits, and Go
// may retire threads (golang/go#27505). (FreeBSD ties it to the process;
// the dedicated thread does no harm there.)
type spawner struct{ reqs chan spawnReq }

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq)}
	go func() {
		runtime.LockOSThread() // never unlocked: this thread lives as long as we do
		for r := range s.reqs {
			r.done <- r.cmd.Start()
		}
	}()
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	s.reqs <- spawnReq{cmd, done}
	return <-done
}
