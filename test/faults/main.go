//go:build linux

// Command faults is `make faults`: a fault matrix run against real
// processes. examples/hello is served on loopback as a library service and
// under `baton run`, clients that never retry POST to it, and each case
// provokes one fault (a bad binary, a release that hangs or crashes, a
// crash right after the handover, a full disk, a descriptor limit, another
// user, bad state, a supervisor killed with SIGKILL, a clock a year ahead;
// issue 14's own attacks: another user's link as the runtime directory, a
// candidate that is or becomes a FIFO or a link to /dev/zero, READY=1 or a
// link connection from another process, baton stop again and again,
// malformed control messages, 2,000 half-open connections). One table says,
// per case and mode, what is expected, what was observed (the exit code and
// code of `baton upgrade --json`, which pid serves afterwards), how many
// requests failed (by kind) and PASS or FAIL. Exits 1 if any case fails.
//
// Linux, as root (tmpfs mounts, prlimit, a client run as user nobody).
//
//	go run ./test/faults               # every case
//	go run ./test/faults -run 'crash'  # the cases whose name matches
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/baton-go/baton/test/faults/rig"
)

func main() {
	run := flag.String("run", "", "only the cases whose name matches this regular expression")
	flag.Parse()
	re, err := regexp.Compile(*run)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults: -run:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	fmt.Println("faults: building examples/hello (releases and broken releases), cmd/baton ...")
	env, err := rig.NewEnv(Targets())
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	defer env.Close()
	var rows []Row
	for _, c := range Cases() {
		if !re.MatchString(c.Name) {
			continue
		}
		for _, m := range c.Modes {
			t0 := time.Now()
			row := RunCase(ctx, env, c, m)
			row.Took = time.Since(t0)
			fmt.Printf("%-4s %-28s %-9s %6s  %s | failed %s\n", verdict(row.Pass), c.Name, m, row.Took.Round(100*time.Millisecond), row.Observed, row.Failed)
			if !row.Pass && row.Log != "" {
				fmt.Println(indent(row.Log))
			}
			rows = append(rows, row)
		}
	}
	fmt.Println()
	PrintTable(os.Stdout, rows)
	failed := 0
	for _, r := range rows {
		if !r.Pass {
			failed++
		}
	}
	fmt.Printf("\n%d cases, %d failed, %v\n", len(rows), failed, time.Since(start).Round(time.Second))
	if failed > 0 {
		env.Close() // os.Exit skips the deferred one: no processes or files left
		os.Exit(1)
	}
}

func verdict(pass bool) string {
	if pass {
		return "PASS"
	}
	return "FAIL"
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "    | " + l
	}
	return strings.Join(lines, "\n")
}
