//go:build unix && !linux

package ctl

// servesEndpoint: these systems do not tell baton which process holds a
// socket (without extra tools), so nothing is corroborated here.
func servesEndpoint(name string, peer Peer, pid int) error { return errNoProcessInfo }

func processInfo(pid int) (procInfo, error) { return procInfo{}, errNoProcessInfo }

func samePath(a, b string) bool { return a == b }
