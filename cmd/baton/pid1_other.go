//go:build !linux

package main

// PID-1 mode (pid1_linux.go) is for Linux containers: elsewhere `baton run`
// is never the first process of a pid namespace, and nothing here changes
// how it starts.
