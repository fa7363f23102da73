// Command badapp stands in for a broken new release in the failure tests.
// Its behaviour is fixed at build time (-ldflags "-X main.mode=...") because
// it is started with the arguments of the service it replaces:
//
//	exit  print an error to stderr and exit 3 before ever being ready
//	hang  start and never become ready (sleeps, bounded)
package main

import (
	"fmt"
	"os"
	"time"
)

var mode = "exit"

func main() {
	switch mode {
	case "hang":
		fmt.Fprintln(os.Stderr, "badapp: warming a cache that never warms")
		time.Sleep(10 * time.Minute)
	default:
		fmt.Fprintln(os.Stderr, "badapp: boom: configuration file /etc/app.conf is invalid")
		os.Exit(3)
	}
}
