package winsock

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// movedConn accepts a connection and turns it into an EventConn the way a
// new generation gets one: a copy of the accepted socket, which is on this
// process's IOCP through the Conn (closed here, as the old generation
// closes its copy). A completion packet from the EventConn's operations
// would reach the runtime's port and crash the test binary.
func movedConn(t *testing.T, l *Listener) (*EventConn, *net.TCPConn) {
	t.Helper()
	sc, cc := acceptOne(t, l)
	ec, err := ConnFromSocket(sc.(*Conn).Socket())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ec.Close() })
	if err := sc.Close(); err != nil {
		t.Fatal(err)
	}
	if ec.LocalAddr().String() != cc.RemoteAddr().String() || ec.RemoteAddr().String() != cc.LocalAddr().String() {
		t.Fatalf("moved conn %v<-%v, client conn %v->%v", ec.LocalAddr(), ec.RemoteAddr(), cc.LocalAddr(), cc.RemoteAddr())
	}
	cc.SetDeadline(time.Now().Add(bound))
	return ec, cc
}

func readFull(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

func TestEventConn(t *testing.T) {
	l := listenLoopback(t)
	ec, cc := movedConn(t, l)
	ec.SetDeadline(time.Now().Add(bound))

	// The old copy's Close left the connection open.
	cc.Write([]byte("ping"))
	if b := readFull(t, ec, 4); string(b) != "ping" {
		t.Fatalf("read %q, want ping", b)
	}
	if _, err := ec.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if b := readFull(t, cc, 4); string(b) != "pong" {
		t.Fatalf("client read %q, want pong", b)
	}

	// A read deadline expires with a timeout error.
	buf := make([]byte, 16)
	ec.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := ec.Read(buf)
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past the deadline: %v, want a timeout", err)
	}
	// Moving the deadline wakes a blocked Read (as net/http does to claim
	// an idle connection), and what the client sends next is not lost.
	ec.SetReadDeadline(time.Time{})
	readErr := make(chan error, 1)
	go func() { _, err := ec.Read(buf); readErr <- err }()
	ec.SetReadDeadline(time.Now())
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked Read after SetReadDeadline(now): %v", err)
		}
	case <-time.After(bound):
		t.Fatal("SetReadDeadline did not wake a blocked Read")
	}
	ec.SetReadDeadline(time.Now().Add(bound))
	cc.Write([]byte("after"))
	if b := readFull(t, ec, 5); string(b) != "after" {
		t.Fatalf("read %q after the cancelled Read, want after", b)
	}

	// A write larger than one operation's buffer arrives whole.
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320,000 bytes
	wrote := make(chan error, 1)
	go func() { _, err := ec.Write(big); wrote <- err }()
	if b := readFull(t, cc, len(big)); !bytes.Equal(b, big) {
		t.Fatal("the client read something else than the big write")
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	// A write deadline in the past fails the write.
	ec.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := ec.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write past the deadline: %v", err)
	}
	ec.SetDeadline(time.Now().Add(bound))

	// Half-close in both directions.
	cc.Write([]byte("last"))
	cc.CloseWrite()
	if b, err := io.ReadAll(ec); err != nil || string(b) != "last" {
		t.Fatalf("read %q, %v; want last then EOF", b, err)
	}
	if _, err := ec.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := ec.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(cc); err != nil || string(b) != "bye" {
		t.Fatalf("client read %q, %v; want bye then EOF", b, err)
	}

	// Close wakes a blocked Read; afterwards everything reports net.ErrClosed.
	ec2, _ := movedConn(t, l)
	go func() { _, err := ec2.Read(buf); readErr <- err }()
	if err := ec2.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read blocked during Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(bound):
		t.Fatal("Close did not wake a blocked Read")
	}
	if err := ec.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Close":            ec.Close(),
		"CloseWrite":       ec.CloseWrite(),
		"Read":             func() error { _, err := ec.Read(buf); return err }(),
		"Write":            func() error { _, err := ec.Write(buf); return err }(),
		"SetReadDeadline":  ec.SetReadDeadline(time.Time{}),
		"SetWriteDeadline": ec.SetWriteDeadline(time.Time{}),
		"Duplicate":        func() error { _, err := ec.Duplicate(uint32(os.Getpid())); return err }(),
	} {
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close: %v, want net.ErrClosed", name, err)
		}
	}
}

// TestEventConnPeerClose: a client that closes is read as EOF.
func TestEventConnPeerClose(t *testing.T) {
	ec, cc := movedConn(t, listenLoopback(t))
	ec.SetDeadline(time.Now().Add(bound))
	cc.Close()
	if _, err := ec.Read(make([]byte, 8)); err != io.EOF {
		t.Fatalf("Read after the client closed: %v, want io.EOF", err)
	}
}

// TestEventConnNotConnected: a listening socket is no connection.
func TestEventConnNotConnected(t *testing.T) {
	l := listenLoopback(t)
	if c, err := ConnFromSocket(l.Socket()); err == nil {
		c.Close()
		t.Fatal("ConnFromSocket accepted a listening socket")
	}
	if c, err := ConnFromProtocolInfo(make([]byte, ProtocolInfoSize)); err == nil {
		c.Close()
		t.Fatal("ConnFromProtocolInfo accepted zero bytes")
	}
}

const moveEnv = "BATON_WINSOCK_MOVE_CHILD"

// TestMoveHelperChild is the new process of TestConnPassedToProcess: it
// rebuilds the connection from the protocol info on stdin, passes it on
// once more inside itself (as a generation that received it would to its
// successor), then answers each line with its pid and the line, until EOF.
func TestMoveHelperChild(t *testing.T) {
	if os.Getenv(moveEnv) != "1" {
		t.Skip("helper process for TestConnPassedToProcess")
	}
	info, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<16))
	if err != nil {
		t.Fatal(err)
	}
	first, err := ConnFromProtocolInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ConnFromSocket(first.Socket())
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	defer c.Close()
	c.SetDeadline(time.Now().Add(bound))
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err == io.EOF && line == "" {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(strconv.Itoa(os.Getpid()) + " " + line)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConnPassedToProcess passes an accepted connection, idle with a read
// pending (as net/http leaves it), to another process: the pending read is
// cancelled, bytes the client sent while the connection moved reach the
// new process, and the old process's Close does not end the connection.
func TestConnPassedToProcess(t *testing.T) {
	l := listenLoopback(t)
	sc, cc := acceptOne(t, l)
	cc.SetDeadline(time.Now().Add(bound))
	buf := make([]byte, 64)
	readErr := make(chan error, 1)
	go func() { _, err := sc.Read(buf); readErr <- err }()
	sc.SetReadDeadline(time.Now())
	if err := <-readErr; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the idle read: %v, want a timeout", err)
	}
	cc.Write([]byte("in transit\n"))

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestMoveHelperChild$")
	cmd.Env = append(os.Environ(), moveEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		select {
		case <-exited:
		case <-time.After(bound):
			cmd.Process.Kill()
			<-exited
			t.Error("the child did not exit")
		}
		if t.Failed() {
			t.Logf("child output:\n%s", out.String())
		}
	}()
	info, err := sc.(*Conn).Duplicate(uint32(cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write(info); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	if err := sc.Close(); err != nil {
		t.Fatal(err)
	}

	child := strconv.Itoa(cmd.Process.Pid)
	r := bufio.NewReader(cc)
	for _, line := range []string{"in transit\n", "after\n"} {
		if line == "after\n" {
			cc.Write([]byte(line))
		}
		got, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("answer to %q: %v", line, err)
		}
		if want := child + " " + line; got != want {
			t.Fatalf("answer %q, want %q", got, want)
		}
	}
	cc.CloseWrite()
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Fatalf("after the client's half-close: %q, %v; want EOF", rest, err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil || !strings.Contains(out.String(), "PASS") {
			t.Fatalf("child: %v", err)
		}
	case <-time.After(bound):
		t.Fatal("the child did not exit after EOF")
	}
}
