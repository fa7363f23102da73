//go:build unix

// Package unixsock tells a live unix socket file from one left behind by a
// process that died, so that it can be replaced without stealing a live one.
package unixsock

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// State of the file at a unix socket path.
type State int

const (
	Absent    State = iota // no file
	NotSocket              // a file that is not a socket: leave it to bind to report
	Live                   // something accepts connections on it
	Stale                  // a socket nobody listens on: safe to remove
	Unknown                // a socket that could not be probed (full backlog, permission...)
)

// Probe checks path. Only a refused connection proves a socket stale: a full
// backlog does not, and a live unixgram socket answers a stream dial with
// EPROTOTYPE. err is the dial error for Unknown.
func Probe(path string) (State, error) {
	fi, err := os.Lstat(path)
	switch {
	case err != nil:
		return Absent, nil
	case fi.Mode()&os.ModeSocket == 0:
		return NotSocket, nil
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return Live, nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return Stale, nil
	}
	return Unknown, err
}

// RemoveStale deletes path if it is a stale socket (left by a crashed
// service), so that binding it again works. Anything else is left for bind
// to report.
func RemoveStale(path string) {
	if st, _ := Probe(path); st == Stale {
		os.Remove(path)
	}
}
