//go:build !linux && !darwin && !freebsd && !netbsd && !openbsd && !dragonfly && !windows

package main

// isTerminalFd: progress is shown on the systems above only.
func isTerminalFd(uintptr) bool { return false }
