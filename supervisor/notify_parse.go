//go:build unix

package supervisor

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// notifyMsg is what one sd_notify datagram says, as far as the supervisor
// reads it. Only Ready changes anything today; the others are parsed so
// that their rules are written (and fuzzed) in one place.
type notifyMsg struct {
	Ready     bool   // a line exactly "READY=1"
	Reloading bool   // a line exactly "RELOADING=1"
	Stopping  bool   // a line exactly "STOPPING=1"
	Status    string // the first "STATUS=" line's value, when valid UTF-8
	MainPID   int    // the first "MAINPID=" line's value, when a pid (1..MaxInt32)
	Errno     int    // the first "ERRNO=" line's value, when 0..MaxInt32
}

// parseNotify reads one datagram's text as systemd does: lines split at
// '\n' and compared whole (no trimming: "READY=1\r" and " READY=1" are not
// readiness), unknown lines ignored, the first of each key with a value
// wins. A datagram with a NUL byte in it says nothing at all (systemd
// drops such a message too: no C string can have made it). One pass over
// payload (at most the 4 KiB read buffer), no allocation but Status.
func parseNotify(payload []byte) notifyMsg {
	var m notifyMsg
	if bytes.IndexByte(payload, 0) >= 0 {
		return m
	}
	var haveStatus, havePID, haveErrno bool
	for rest := payload; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		key, value, ok := bytes.Cut(line, []byte{'='})
		if !ok {
			continue
		}
		switch string(key) { // no allocation: the compiler compares in place
		case "READY":
			m.Ready = m.Ready || string(value) == "1"
		case "RELOADING":
			m.Reloading = m.Reloading || string(value) == "1"
		case "STOPPING":
			m.Stopping = m.Stopping || string(value) == "1"
		case "STATUS":
			if !haveStatus {
				haveStatus = true
				if utf8.Valid(value) {
					m.Status = string(value)
				}
			}
		case "MAINPID":
			if !havePID {
				havePID = true
				if n, ok := notifyNumber(value); ok && n > 0 {
					m.MainPID = n
				}
			}
		case "ERRNO":
			if !haveErrno {
				haveErrno = true
				if n, ok := notifyNumber(value); ok {
					m.Errno = n
				}
			}
		}
	}
	return m
}

// notifyNumber reads a decimal in 0..MaxInt32 (pid_t and errno are C
// ints), digits only: no sign, no spaces, no leading '+'.
func notifyNumber(b []byte) (int, bool) {
	if len(b) == 0 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(b), 10, 32)
	if err != nil {
		return 0, false
	}
	return int(n), true
}
