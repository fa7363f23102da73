//go:build unix

package main

import (
	"bufio"
	"fmt"
	"os"
	"syscall"
)

const watchdogCmd = "__watchdog"

// watchdog is started by `baton run` where no parent-death signal exists:
// it learns the process groups of the generations on stdin and, if stdin
// ends without "bye" (the supervisor died), kills them.
func watchdog() {
	groups := map[int]bool{}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var op string
		var pgid int
		line := sc.Text()
		if line == "bye" {
			os.Exit(0)
		}
		if _, err := fmt.Sscanf(line, "%s %d", &op, &pgid); err != nil || pgid <= 1 {
			continue
		}
		switch op {
		case "add":
			groups[pgid] = true
		case "remove":
			delete(groups, pgid)
		}
	}
	for pgid := range groups {
		syscall.Kill(-pgid, syscall.SIGKILL)
	}
	if len(groups) > 0 {
		fmt.Fprintf(os.Stderr, "baton: the supervisor died; killed %d generation(s)\n", len(groups))
	}
	os.Exit(0)
}
