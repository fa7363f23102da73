//go:build linux || darwin || freebsd

package handoff

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestPeerPIDIsTheConnectingProcess: where the kernel tells the peer's pid
// (Linux, macOS, FreeBSD 13+), the accepting side of a link socket learns
// the pid of the process that connected: here, this one. On FreeBSD before
// 13.0 the kernel does not fill cr_pid and the test fails (baton supports
// 13.0 and later there).
func TestPeerPIDIsTheConnectingProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	pid, ok := peerPID(server)
	if !ok || pid != os.Getpid() {
		t.Fatalf("peerPID = %d, %v; want %d, true", pid, ok, os.Getpid())
	}
}
