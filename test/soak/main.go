//go:build linux

// Command soak is `make soak`: examples/hello upgraded N times back to back
// (default 10,000; -upgrades or SOAK_UPGRADES) under non-retrying POST
// load, as a library service and under `baton run`. It prints, for the
// first and the last hundred upgrades, the averages of the serving
// generation's descriptors (/proc/PID/fd), goroutines (hello
// -debug-goroutines) and RSS (VmRSS), and of the supervisor's
// descriptors, goroutines (go_goroutines of its --metrics), threads and
// RSS, and the files in the runtime directory, with their ratio. It fails on a failed
// request, an old generation left running, or a ratio over its bound.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/baton-go/baton/test/faults/rig"
)

func main() {
	def := 10_000
	if v, err := strconv.Atoi(os.Getenv("SOAK_UPGRADES")); err == nil && v > 0 {
		def = v
	}
	upgrades := flag.Int("upgrades", def, "upgrades per mode (default: $SOAK_UPGRADES, else 10000)")
	modes := flag.String("modes", "library,run", "modes to soak: library, run")
	idleClients := flag.Int("idle-clients", 0, "also this many keep-alive clients that POST once every -think (their connections move between generations)")
	think := flag.Duration("think", time.Second, "pause between two POSTs of an idle client")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Hour)
	defer cancel()
	fmt.Printf("soak: %d upgrades per mode under load; building examples/hello and cmd/baton ...\n", *upgrades)
	env, err := rig.NewEnv(Targets())
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
	defer env.Close()
	failed := false
	for i, m := range strings.Split(*modes, ",") {
		mode := rig.Library
		if strings.TrimSpace(m) == "run" {
			mode = rig.Run
		}
		res, err := Run(ctx, env, Config{Mode: mode, Upgrades: *upgrades, Progress: os.Stdout, IdleClients: *idleClients, Think: *think}, fmt.Sprintf("soak%d", i))
		if err != nil {
			fmt.Fprintf(os.Stderr, "soak (%s): %v\n", mode, err)
			env.Close()
			os.Exit(1)
		}
		Print(os.Stdout, res)
		failed = failed || res.Failed()
	}
	if failed {
		fmt.Println("soak: FAILED")
		env.Close()
		os.Exit(1)
	}
	fmt.Println("soak: ok")
}
