//go:build unix

package baton

import "syscall"

var defaultUpgradeSignal = syscall.SIGHUP
