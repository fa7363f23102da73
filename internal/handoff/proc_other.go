//go:build unix && !linux

package handoff

import (
	"os"
)

// Self describes this process.
func Self() Proc { return Proc{PID: os.Getpid()} }

// Alive reports whether p is still running.
func Alive(p Proc) bool { return processExists(p.PID) }
