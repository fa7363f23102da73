package release

import (
	"errors"
	"os/exec"

	"golang.org/x/sys/windows"
)

// killGroup: on timeout the smoke process itself is killed (os/exec's
// default). Its own children are not (that needs a job object assigned
// before the process runs, which os/exec cannot do race-free); smoke
// commands are expected to be the binary itself.
func killGroup(cmd *exec.Cmd) {}

// isBusy reports a sharing violation or an access denied on a file in use.
func isBusy(err error) bool {
	return errors.Is(err, windows.ERROR_SHARING_VIOLATION) || errors.Is(err, windows.ERROR_ACCESS_DENIED) ||
		errors.Is(err, windows.ERROR_LOCK_VIOLATION) || errors.Is(err, windows.ERROR_USER_MAPPED_FILE)
}
