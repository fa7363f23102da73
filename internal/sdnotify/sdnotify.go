// Package sdnotify sends the systemd notifications baton uses, shared by
// the library and the supervisor.
package sdnotify

import (
	"fmt"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Send sends msg to $NOTIFY_SOCKET (nothing when it is not set).
func Send(msg string) error {
	_, err := daemon.SdNotify(false, msg)
	return err
}

// Reloading says an upgrade is under way; Type=notify-reload wants
// MONOTONIC_USEC with it.
func Reloading(status string) {
	Send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=%s", monotonicUsec(), status))
}
