//go:build !linux

// Command soak is `make soak` (see main.go): it reads /proc, Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "soak: Linux only (descriptors, RSS and threads come from /proc)")
	os.Exit(2)
}
