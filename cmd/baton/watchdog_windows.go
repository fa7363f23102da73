package main

import (
	"fmt"
	"os"
)

const watchdogCmd = "__watchdog"

func watchdog() {
	fmt.Fprintln(os.Stderr, "baton __watchdog: not used on Windows")
	os.Exit(exitUsage)
}
