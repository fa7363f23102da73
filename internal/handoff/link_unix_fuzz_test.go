//go:build unix

package handoff

import (
	"net"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzRecvHanded: what a generation (or the supervisor) reads from the
// other end of a link: the handoff message, the state and the named files'
// descriptors. No input makes it panic, and it never accepts a message
// announcing files that did not come (none are sent here).
func FuzzRecvHanded(f *testing.F) {
	addSeeds(f, append(handoffSeeds(), linkSeeds()...))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 64<<10 {
			return // more than a socket buffer: the write would block
		}
		syscall.ForkLock.RLock() // no child inherits them (no SOCK_CLOEXEC on darwin)
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err == nil {
			unix.CloseOnExec(fds[0])
			unix.CloseOnExec(fds[1])
		}
		syscall.ForkLock.RUnlock()
		if err != nil {
			t.Fatal(err)
		}
		w := os.NewFile(uintptr(fds[0]), "w")
		rf := os.NewFile(uintptr(fds[1]), "r")
		c, err := net.FileConn(rf)
		rf.Close()
		if err != nil {
			w.Close()
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := w.Write(b); err != nil {
			w.Close()
			t.Fatal(err)
		}
		w.Close()
		h, err := recvHanded(c, 1<<16)
		if err != nil {
			return
		}
		defer h.Close()
		if len(h.Msg.Files) != 0 || len(h.Items) != 0 {
			t.Fatalf("accepted %d files (%d items) that were never sent", len(h.Msg.Files), len(h.Items))
		}
		if int64(len(h.State)) != h.Msg.StateLen {
			t.Fatalf("accepted a state of %d bytes announced as %d", len(h.State), h.Msg.StateLen)
		}
	})
}
