package supervisor

import (
	"bytes"
	"github.com/baton-go/baton/internal/fuzzseed"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// The sd_notify text (READY=1 lines) is parsed by parseNotify, fuzzed by
// FuzzParseNotify (notify_parse_test.go); what is fuzzed here is
// readNotifyMsg, the reading of one datagram with the sender's
// credentials and any descriptors sent along (FDSTORE=1): whatever a
// process sends, the payload arrives whole
// (or cut at the buffer), the sender's pid is the kernel's, and every
// descriptor that came with it is closed.
//
// Seeds: f.Add and testdata/fuzz/FuzzNotifyMsg/; rewrite the files with
//
//	BATON_WRITE_CORPUS=1 go test -run '^FuzzNotifyMsg$' ./supervisor
func FuzzNotifyMsg(f *testing.F) {
	type seed struct {
		msg []byte
		fds uint8
	}
	seeds := []seed{
		{[]byte("READY=1"), 0},
		{[]byte("READY=1\nSTATUS=serving\nMAINPID=4242\n"), 0},
		{[]byte("STATUS=starting\nREADY=0"), 0},
		{[]byte("FDSTORE=1\nFDNAME=conn"), 2},
		{[]byte("WATCHDOG=1"), 1},
		{[]byte("READY=1\x00READY=1"), 0},
		{[]byte("\r\nREADY=1\r\n"), 0},
		{bytes.Repeat([]byte("READY=1\n"), 600), 0}, // longer than the buffer
		{[]byte{}, 3},
		{[]byte{0xff, 0xfe, '\n'}, 0},
	}
	var args [][]any
	for _, s := range seeds {
		args = append(args, []any{s.msg, s.fds})
	}
	fuzzseed.Add(f, args...)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		f.Fatal(err)
	}
	send := fds[0]
	f.Cleanup(func() { unix.Close(send) })
	rf := os.NewFile(uintptr(fds[1]), "notify")
	fc, err := net.FileConn(rf)
	rf.Close()
	if err != nil {
		f.Fatal(err)
	}
	rc := fc.(*net.UnixConn)
	f.Cleanup(func() { rc.Close() })
	if err := enableNotifyCreds(rc); err != nil {
		f.Fatal(err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { devnull.Close() })
	buf, oob := make([]byte, 4096), make([]byte, 4096) // as readNotify
	f.Fuzz(func(t *testing.T, msg []byte, nfds uint8) {
		if len(msg) > 64<<10 {
			return // more than a datagram may carry here
		}
		var rights []byte
		if k := int(nfds % 4); k > 0 {
			list := make([]int, k)
			for i := range list {
				list[i] = int(devnull.Fd())
			}
			rights = unix.UnixRights(list...)
		}
		open := countFDs(t)
		if err := unix.Sendmsg(send, msg, rights, nil, 0); err != nil {
			t.Fatalf("sending %d bytes and %d descriptors: %v", len(msg), nfds%4, err)
		}
		n, pid, err := readNotifyMsg(rc, buf, oob)
		if err != nil {
			t.Fatalf("readNotifyMsg: %v", err)
		}
		if want := min(len(msg), len(buf)); n != want || !bytes.Equal(buf[:n], msg[:n]) {
			t.Fatalf("read %d bytes %q, sent %d", n, buf[:n], len(msg))
		}
		if pid != os.Getpid() {
			t.Fatalf("sender pid %d, we are %d", pid, os.Getpid())
		}
		if now := countFDs(t); now != open {
			t.Fatalf("%d descriptors open after the message, %d before", now, open)
		}
	})
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
