//go:build unix

package baton

import (
	"syscall"

	"golang.org/x/sys/unix"
)

var defaultUpgradeSignal = syscall.SIGHUP

func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}
