package contract

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestOutOfDescriptorsIsResourcesExitFailed(t *testing.T) {
	for _, err := range []error{
		syscall.EMFILE,
		&os.PathError{Op: "open", Path: "/x", Err: syscall.EMFILE},
		fmt.Errorf("accepting: %w", &os.SyscallError{Syscall: "accept4", Err: syscall.ENFILE}),
	} {
		if c := CodeOf(err); c != CodeResources {
			t.Errorf("CodeOf(%v) = %q, want %q", err, c, CodeResources)
		}
		if x := ExitCode(CodeOf(err)); x != ExitFailed {
			t.Errorf("exit code for %v = %d, want %d (failed, the service keeps serving)", err, x, ExitFailed)
		}
	}
	if c := CodeOf(fmt.Errorf("x: %w", syscall.EINVAL)); c != CodeInternal {
		t.Errorf("EINVAL: %q", c)
	}
}

func TestExitErrorSignalWording(t *testing.T) {
	e := &ExitError{PID: 7, ExitCode: -1, Signal: "killed"}
	msg := e.Error()
	if strings.Contains(msg, "killed by killed") || !strings.Contains(msg, "killed by signal: killed") {
		t.Errorf("Error() = %q", msg)
	}
	e = &ExitError{PID: 7, ExitCode: 3}
	if msg := e.Error(); !strings.Contains(msg, "exit code 3") {
		t.Errorf("Error() = %q", msg)
	}
}
