//go:build unix

package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/baton-go/baton/internal/contract"
)

const activateCmd = "__activate"

var (
	sigUSR1 = syscall.SIGUSR1
	sigUSR2 = syscall.SIGUSR2
)

// activate is what the supervisor starts for each generation: it sets
// LISTEN_PID to its own pid, which the app keeps across exec, so that the
// socket-activation variables name the app (exec.Cmd cannot know a child's
// pid before it runs).
func activate(args []string) {
	// args: -- EXECUTABLE ARGV0 [ARGS...]
	if len(args) < 3 || args[0] != "--" {
		fmt.Fprintln(os.Stderr, "baton __activate: internal command of baton run")
		os.Exit(exitUsage)
	}
	path, err := exec.LookPath(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "baton:", err)
		os.Exit(127)
	}
	os.Setenv(contract.EnvListenPID, strconv.Itoa(os.Getpid()))
	err = syscall.Exec(path, args[2:], os.Environ())
	fmt.Fprintln(os.Stderr, "baton: exec", path+":", err)
	os.Exit(126)
}
