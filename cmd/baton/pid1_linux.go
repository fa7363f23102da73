//go:build linux

package main

// PID-1 mode: `baton run` as the first process of a container (docker's
// ENTRYPOINT, a Kubernetes container without shareProcessNamespace,
// `unshare --pid --fork`).
//
// PID 1 of a pid namespace has two duties no ordinary process has:
//
//   - every orphan of the namespace is reparented to it, and stays a zombie
//     (a process table entry, a pid) until PID 1 waits for it. An app that
//     starts helpers (a shell, a `git`, a plugin) and dies before them
//     leaves orphans; without a reaper they pile up until the namespace
//     runs out of pids.
//   - the kernel delivers it only the signals it has a handler for: a
//     `docker stop` or the kubelet's SIGTERM must be acted on, and its exit
//     code is the container's.
//
// The supervisor cannot simply reap everything itself: it waits for each
// of its generations by pid (os/exec's Cmd.Wait is wait4(pid)) and decides
// upgrades, rollbacks and restarts from those exit statuses. A wait4(-1)
// loop in the same process would steal them at random (Cmd.Wait would then
// fail with ECHILD and a crashed generation would look like an unknown
// end); reaping "everything but the generations" would need a list of pids
// shared with the supervisor and would race every fork against it.
//
// So PID 1 stays a minimal init, as tini and dumb-init do: it starts the
// very same command line again as its only child (the real supervisor,
// marked with envPID1Child so that it does not do this again), forwards
// the signals an operator or an orchestrator sends, reaps every process
// that ends (its child and every orphan) with wait4(-1), and exits with
// its child's exit code, or 128+N when the child was killed by signal N
// (the shell's convention, which `docker ps` and the kubelet show). The
// supervisor's own waits are untouched: its generations are its children,
// not PID 1's.

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// envPID1Child marks the supervisor that baton's init started: it is not
// PID 1 (its init is), and its generations do not inherit the mark.
const envPID1Child = "BATON_PID1_CHILD"

// pid1Forwarded are the signals init passes on to the supervisor, which
// then does what it does outside a container: TERM and INT drain every
// generation and stop, HUP upgrades, QUIT dumps its goroutines and exits (Go's
// default; the generations die with it), USR1 and USR2 are ignored.
var pid1Forwarded = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

func init() {
	if os.Getenv(envPID1Child) != "" {
		// The supervisor started by init: drop the mark so that the app's
		// generations (and anything they start) never see it.
		os.Unsetenv(envPID1Child)
		return
	}
	if os.Getpid() != 1 || len(os.Args) < 2 || os.Args[1] != "run" {
		return
	}
	os.Exit(pid1Init(os.Args))
}

// pid1Init runs argv again as a child and serves as its init until it
// exits; it returns the exit code of the container.
func pid1Init(argv []string) int {
	// Before the child exists: a signal that arrives while it starts is
	// queued here and forwarded once it runs, not lost. SIGCHLD wakes the
	// reaper.
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, append([]os.Signal{unix.SIGCHLD}, pid1Forwarded...)...)

	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "baton: init: cannot find its own binary:", err)
		return exitInternal
	}
	env := append(os.Environ(), envPID1Child+"=1")
	// syscall.ForkExec, not os/exec: nothing in this process may wait for
	// a particular pid, the reaper below waits for all of them. The child
	// gets stdin, stdout and stderr and stays in init's process group (a
	// terminal's Ctrl-C reaches it directly and once more through init:
	// the supervisor acts on the first, a stop under way ignores the
	// second).
	child, err := syscall.ForkExec(exe, argv, &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{0, 1, 2},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "baton: init: cannot start the supervisor:", err)
		return exitInternal
	}
	for sig := range sigs {
		if sig != unix.SIGCHLD {
			// ESRCH: the child has just exited; its SIGCHLD is on its way.
			_ = unix.Kill(child, sig.(unix.Signal))
			continue
		}
		if code, done := reapAll(child); done {
			return code
		}
	}
	return exitInternal // not reached: sigs is never closed
}

// reapAll waits for every process that has ended (the orphans of the
// namespace and the child), without blocking. done reports that child was
// among them, with the exit code init should end with.
func reapAll(child int) (code int, done bool) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			// ECHILD: no child left at all; 0: none has ended (yet).
			return code, done
		}
		if pid != child {
			continue // an orphan: reaped, that is all it needed
		}
		done = true
		switch {
		case ws.Exited():
			code = ws.ExitStatus()
		case ws.Signaled():
			code = 128 + int(ws.Signal())
			fmt.Fprintf(os.Stderr, "baton: init: the supervisor was killed by signal %d (%v); exit %d\n", int(ws.Signal()), ws.Signal(), code)
		default:
			code = exitInternal
		}
		// Go on: orphans that ended at the same time are reaped too
		// (whatever is still running is killed by the kernel when PID 1
		// exits, with the whole namespace).
	}
}
