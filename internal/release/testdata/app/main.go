// Command app is the candidate binary of the release tests.
//
//	app --version          print the version built in and exit 0
//	app --exit N           print to stderr and exit N
//	app --hang PIDFILE     start a child that sleeps, write its pid, sleep
package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"
)

var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Println("app", version)
		return
	}
	switch os.Args[1] {
	case "--version":
		fmt.Println("app", version)
	case "--exit":
		code, _ := strconv.Atoi(os.Args[2])
		fmt.Fprintln(os.Stderr, "app: refusing to start: missing DATABASE_URL")
		os.Exit(code)
	case "--hang":
		child := exec.Command(os.Args[0], "--sleep")
		if err := child.Start(); err != nil {
			panic(err)
		}
		os.WriteFile(os.Args[2], []byte(strconv.Itoa(child.Process.Pid)), 0o600)
		time.Sleep(time.Hour)
	case "--sleep":
		time.Sleep(time.Hour)
	}
}
