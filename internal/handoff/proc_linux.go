package handoff

import (
	"bytes"
	"os"
	"strconv"
)

// procStat returns the state letter and start time (field 22, in clock
// ticks since boot) of a process, or ok=false when it does not exist.
func procStat(pid int) (state byte, start uint64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name is in parentheses and may contain spaces: parse after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, 0, false
	}
	fields := bytes.Fields(b[i+2:])
	if len(fields) < 20 {
		return 0, 0, false
	}
	start, _ = strconv.ParseUint(string(fields[19]), 10, 64)
	return fields[0][0], start, true
}

// Self describes this process.
func Self() Proc {
	_, start, _ := procStat(os.Getpid())
	return Proc{PID: os.Getpid(), Start: start}
}

// Alive reports whether p is still running: not gone, not a zombie, and not
// a different process that got the same pid.
func Alive(p Proc) bool {
	state, start, ok := procStat(p.PID)
	if !ok || state == 'Z' || state == 'X' {
		return false
	}
	return p.Start == 0 || start == p.Start
}
