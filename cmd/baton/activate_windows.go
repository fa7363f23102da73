package main

import (
	"fmt"
	"os"
	"syscall"
)

const activateCmd = "__activate"

var (
	sigUSR1 = syscall.Signal(0xa)
	sigUSR2 = syscall.Signal(0xc)
)

func activate(args []string) {
	fmt.Fprintln(os.Stderr, "baton __activate: not available on Windows")
	os.Exit(exitUsage)
}
