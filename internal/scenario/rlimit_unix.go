//go:build unix

package scenario

import "syscall"

// RaiseOpenFiles raises this process's soft limit of open files to its hard
// limit (the Go runtime usually did already) and returns the soft limit
// now in force.
func RaiseOpenFiles() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		want := l
		want.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
			l = want
		}
	}
	return uint64(l.Cur), nil
}
