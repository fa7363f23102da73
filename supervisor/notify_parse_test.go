//go:build unix

package supervisor

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/baton-go/baton/internal/fuzzseed"
)

func TestParseNotify(t *testing.T) {
	cases := []struct {
		in   string
		want notifyMsg
	}{
		{"", notifyMsg{}},
		{"READY=1", notifyMsg{Ready: true}},
		{"READY=1\n", notifyMsg{Ready: true}},
		{"\n\nREADY=1\n\n", notifyMsg{Ready: true}},
		{"STATUS=serving\nREADY=1\nMAINPID=4242\n", notifyMsg{Ready: true, Status: "serving", MainPID: 4242}},
		// Readiness only from a line that is exactly READY=1.
		{"READY=0", notifyMsg{}},
		{"READY=01", notifyMsg{}},
		{"READY=", notifyMsg{}},
		{"READY", notifyMsg{}},
		{"READY==1", notifyMsg{}},
		{"ready=1", notifyMsg{}},
		{"XREADY=1", notifyMsg{}},
		{" READY=1", notifyMsg{}},
		{"READY=1 ", notifyMsg{}},
		{"READY=1\r", notifyMsg{}},
		{"\r\nREADY=1\r\n", notifyMsg{}},
		{"STATUS=READY=1", notifyMsg{Status: "READY=1"}},
		{strings.Repeat("READY=0\n", 500) + "READY=1", notifyMsg{Ready: true}},
		// A NUL anywhere: the whole datagram says nothing.
		{"READY=1\x00", notifyMsg{}},
		{"READY=1\n\x00", notifyMsg{}},
		{"STATUS=a\x00b\nREADY=1", notifyMsg{}},
		{"READY=1\x00READY=1", notifyMsg{}},
		// The first of each key with a value wins; bad values are dropped.
		{"STATUS=one\nSTATUS=two", notifyMsg{Status: "one"}},
		{"STATUS=\nSTATUS=two", notifyMsg{}},
		{"STATUS=\xff\xfe\nSTATUS=two", notifyMsg{}},
		{"STATUS=a=b", notifyMsg{Status: "a=b"}},
		{"MAINPID=1\nMAINPID=2", notifyMsg{MainPID: 1}},
		{"MAINPID=0", notifyMsg{}},
		{"MAINPID=-1", notifyMsg{}},
		{"MAINPID=+5", notifyMsg{}},
		{"MAINPID= 5", notifyMsg{}},
		{"MAINPID=5 ", notifyMsg{}},
		{"MAINPID=0x10", notifyMsg{}},
		{"MAINPID=2147483647", notifyMsg{MainPID: math.MaxInt32}},
		{"MAINPID=2147483648", notifyMsg{}},
		{"MAINPID=99999999999999999999999", notifyMsg{}},
		{"MAINPID=007", notifyMsg{MainPID: 7}},
		{"ERRNO=5", notifyMsg{Errno: 5}},
		{"ERRNO=-5", notifyMsg{}},
		{"RELOADING=1\nSTOPPING=1", notifyMsg{Reloading: true, Stopping: true}},
		{"RELOADING=0\nSTOPPING=yes", notifyMsg{}},
		{"FDSTORE=1\nFDNAME=conn\nWATCHDOG=1", notifyMsg{}},
	}
	for _, c := range cases {
		if got := parseNotify([]byte(c.in)); got != c.want {
			t.Errorf("parseNotify(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
	// Well-formed messages come back as they were written.
	for _, m := range []notifyMsg{
		{},
		{Ready: true},
		{Ready: true, Reloading: true, Stopping: true, Status: "ünïcode = fine", MainPID: 1, Errno: math.MaxInt32},
		{Status: "READY=1", MainPID: math.MaxInt32},
	} {
		if got := parseNotify(formatNotify(m)); got != m {
			t.Errorf("round trip of %+v: %+v (sent %q)", m, got, formatNotify(m))
		}
	}
}

// FuzzParseNotify: whatever a datagram holds, parseNotify does not panic,
// says READY (RELOADING, STOPPING) only when a line is exactly that and no
// NUL is in it (checked against a plain split, the former inline parser),
// returns nothing longer than it was given, only pids and errnos a C int
// holds, and what it returns, written again, reads back the same.
//
// Seeds: f.Add and testdata/fuzz/FuzzParseNotify/; rewrite the files with
//
//	BATON_WRITE_CORPUS=1 go test -run '^FuzzParseNotify$' ./supervisor
func FuzzParseNotify(f *testing.F) {
	fuzzseed.Add(f, fuzzseed.Bytes(
		[]byte("READY=1"),
		[]byte("READY=1\nSTATUS=serving\nMAINPID=4242\n"),
		[]byte("STATUS=starting\nREADY=0"),
		[]byte("READY=1\x00READY=1"),
		[]byte("\r\nREADY=1\r\n"),
		[]byte(" READY=1\nREADY==1\nready=1"),
		[]byte("STATUS=one\nSTATUS=two\nMAINPID=2147483648\nMAINPID=7\nERRNO=-1"),
		[]byte("RELOADING=1\nSTOPPING=1\nERRNO=13"),
		[]byte("STATUS=\xff\xfe\nREADY=1"),
		[]byte("FDSTORE=1\nFDNAME=conn\nWATCHDOG=1\nEXTEND_TIMEOUT_USEC=5000000"),
		bytes.Repeat([]byte("READY=0\n"), 512),
		[]byte{},
	)...)
	f.Fuzz(func(t *testing.T, payload []byte) {
		m := parseNotify(payload)
		lines := bytes.Split(payload, []byte("\n"))
		has := func(line string) bool {
			if bytes.IndexByte(payload, 0) >= 0 {
				return false
			}
			for _, l := range lines {
				if string(l) == line {
					return true
				}
			}
			return false
		}
		if m.Ready != has("READY=1") || m.Reloading != has("RELOADING=1") || m.Stopping != has("STOPPING=1") {
			t.Fatalf("parseNotify(%q) = %+v; lines READY=1 %v, RELOADING=1 %v, STOPPING=1 %v",
				payload, m, has("READY=1"), has("RELOADING=1"), has("STOPPING=1"))
		}
		if len(m.Status) > len(payload) || (m.Status != "" && !bytes.Contains(payload, []byte("STATUS="+m.Status))) {
			t.Fatalf("status %q not from %q", m.Status, payload)
		}
		if m.MainPID < 0 || m.MainPID > math.MaxInt32 || m.Errno < 0 || m.Errno > math.MaxInt32 {
			t.Fatalf("pid %d, errno %d out of a C int's range (from %q)", m.MainPID, m.Errno, payload)
		}
		if again := parseNotify(formatNotify(m)); again != m {
			t.Fatalf("round trip: %+v written as %q reads %+v (from %q)", m, formatNotify(m), again, payload)
		}
	})
}

// formatNotify writes m as sd_notify would send it: the test's inverse of
// parseNotify for well-formed messages (Status one valid UTF-8 line, no
// NUL; MainPID and Errno 0 mean unset).
func formatNotify(m notifyMsg) []byte {
	var b bytes.Buffer
	line := func(ok bool, s string) {
		if ok {
			b.WriteString(s + "\n")
		}
	}
	line(m.Status != "", "STATUS="+m.Status)
	line(m.Ready, "READY=1")
	line(m.Reloading, "RELOADING=1")
	line(m.Stopping, "STOPPING=1")
	line(m.MainPID > 0, fmt.Sprintf("MAINPID=%d", m.MainPID))
	line(m.Errno > 0, fmt.Sprintf("ERRNO=%d", m.Errno))
	return b.Bytes()
}
