//go:build unix

package e2e

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/handoff"
	"golang.org/x/sys/unix"
)

// playParent starts hello as if a baton parent had, but sends it raw bytes
// as the handoff message, and returns hello's reply, its exit code and
// stderr.
func playParent(t *testing.T, message []byte) (handoff.Reply, int, string) {
	t.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours := os.NewFile(uintptr(pair[0]), "parent-end")
	theirs := os.NewFile(uintptr(pair[1]), "child-end")
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var stderr bytes.Buffer
	cmd := exec.Command(bins["hello"], "-name", "", "-addr", freeAddr(t, "tcp"))
	cmd.Env = append(os.Environ(), handoff.EnvChannel+"=3")
	cmd.ExtraFiles = []*os.File{theirs, os.Stderr}
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	tracker.Track(cmd.Process.Pid)
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(message); err != nil {
		t.Fatal(err)
	}
	// EOF after the message: a truncated message must not hang the child.
	conn.(*net.UnixConn).CloseWrite()
	reply, rerr := handoff.ReadReply(conn)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("hello did not exit after refusing the handoff")
	}
	if rerr != nil {
		t.Fatalf("no reply from hello: %v (stderr: %s)", rerr, stderr.String())
	}
	return reply, cmd.ProcessState.ExitCode(), stderr.String()
}

func frame(b []byte) []byte {
	out := binary.BigEndian.AppendUint32(nil, uint32(len(b)))
	return append(out, b...)
}

// TestHandoffRefusals: a real new generation given a corrupt state blob or
// an unknown protocol version says why to its parent and exits non-zero
// instead of starting with bad input.
func TestHandoffRefusals(t *testing.T) {
	t.Run("corrupt state", func(t *testing.T) {
		var buf bytes.Buffer
		if err := handoff.WriteHandoff(&buf, handoff.Handoff{Generation: 2}, []byte(`{"served":41}`)); err != nil {
			t.Fatal(err)
		}
		msg := buf.Bytes()
		msg[len(msg)-3] ^= 0xff // flip a byte of the blob
		reply, code, stderr := playParent(t, msg)
		if reply.Type != "refused" || reply.Code != "state" || !strings.Contains(reply.Reason, "sha256 mismatch") {
			t.Fatalf("reply %+v, want a refusal for a corrupt state", reply)
		}
		if code == 0 || !strings.Contains(stderr, "state blob corrupt") {
			t.Fatalf("exit code %d, stderr %q: want non-zero and a clear message", code, stderr)
		}
	})
	t.Run("truncated state", func(t *testing.T) {
		var buf bytes.Buffer
		handoff.WriteHandoff(&buf, handoff.Handoff{Generation: 2}, bytes.Repeat([]byte("x"), 1000))
		msg := buf.Bytes()[:buf.Len()-10]
		reply, code, _ := playParent(t, msg)
		if reply.Type != "refused" || reply.Code != "state" || code == 0 {
			t.Fatalf("reply %+v exit %d, want a state refusal", reply, code)
		}
	})
	t.Run("unknown protocol version", func(t *testing.T) {
		reply, code, stderr := playParent(t, frame([]byte(`{"v":99,"generation":2}`)))
		if reply.Type != "refused" || reply.Code != "protocol" || !strings.Contains(reply.Reason, "version 99") {
			t.Fatalf("reply %+v, want a protocol refusal naming version 99", reply)
		}
		if code == 0 || !strings.Contains(stderr, "protocol version not supported") {
			t.Fatalf("exit code %d, stderr %q", code, stderr)
		}
	})
	t.Run("malformed message", func(t *testing.T) {
		reply, code, _ := playParent(t, frame([]byte(`{not json`)))
		if reply.Type != "refused" || code == 0 {
			t.Fatalf("reply %+v exit %d, want a refusal", reply, code)
		}
	})
}
