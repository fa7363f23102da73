//go:build !linux

// Command faults is `make faults` (see main.go): it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "faults: the fault matrix runs on Linux only (tmpfs, prlimit, /proc, SO_PEERCRED, time namespaces)")
	os.Exit(2)
}
