//go:build windows

// Command scmwatch polls a service's SCM state and process id every
// INTERVAL and prints one line per poll, "UNIXMILLI STATE PID", until its
// stdin closes (the Wine lane's RUNNING-throughout check).
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/windows/svc/mgr"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: scmwatch NAME INTERVAL")
		os.Exit(2)
	}
	every, err := time.ParseDuration(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	m, err := mgr.Connect()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s, err := m.OpenService(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	eof := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(eof) }()
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		st, err := s.Query()
		if err != nil {
			fmt.Fprintf(w, "%d ERROR %v\n", time.Now().UnixMilli(), err)
		} else {
			fmt.Fprintf(w, "%d %d %d\n", time.Now().UnixMilli(), st.State, st.ProcessId)
		}
		w.Flush()
		select {
		case <-eof:
			return
		case <-t.C:
		}
	}
}
