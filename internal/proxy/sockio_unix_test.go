//go:build unix

package proxy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// sockIO behaves as the net.Conn it stands for: bytes in order, the end
// of the stream as io.EOF, deadlines, a full socket waited out. Without
// the race detector these are the RawSyscall calls (sockio_linux.go).
func TestSockIOReads(t *testing.T) {
	a, b := loopbackPair(t)
	r := sockReader(b)
	if _, ok := r.(*sockIO); !ok {
		t.Fatalf("a TCP connection's reader is a %T, want *sockIO", r)
	}
	if n, err := r.Read(nil); n != 0 || err != nil {
		t.Errorf("empty read: %d, %v", n, err)
	}
	// Nothing there yet: the read waits until its deadline.
	_ = b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	buf := make([]byte, 64)
	if n, err := r.Read(buf); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %d, %v; want 0 and os.ErrDeadlineExceeded", n, err)
	}
	_ = b.SetReadDeadline(time.Time{})
	// A read waiting for bytes gets them once they are written.
	got := make(chan string, 1)
	go func() {
		n, err := r.Read(buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	if _, err := a.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "hello" {
		t.Fatalf("read %q, want hello", s)
	}
	a.Close()
	if n, err := r.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("read after the peer closed: %d, %v; want 0, io.EOF", n, err)
	}
}

func TestSockIOWrites(t *testing.T) {
	a, b := loopbackPair(t)
	w := sockWriter(a)
	// More than the socket buffers hold: the write waits for the reader,
	// and everything arrives in order.
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	read := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(b)
		read <- all
	}()
	if n, err := w.Write(data); n != len(data) || err != nil {
		t.Fatalf("write of %d bytes: %d, %v", len(data), n, err)
	}
	a.Close()
	if all := <-read; !bytes.Equal(all, data) {
		t.Fatalf("read %d bytes, not the %d written in order", len(all), len(data))
	}

	// A peer that reads nothing: the write stops at its deadline, having
	// written part of it.
	c, _ := loopbackPair(t)
	_ = c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := sockWriter(c).Write(data)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n <= 0 || n >= len(data) {
		t.Fatalf("write to a peer that does not read: %d of %d, %v; want part of it and os.ErrDeadlineExceeded", n, len(data), err)
	}
}

// A write to a connection the peer has closed fails (it does not hang or
// report success for ever).
func TestSockIOWriteToClosedPeer(t *testing.T) {
	a, b := loopbackPair(t)
	b.Close()
	w := sockWriter(a)
	var err error
	for i := 0; i < 100 && err == nil; i++ { // the first writes may still be taken
		_, err = w.Write([]byte("x"))
		if err == nil {
			// The peer's reset arrives in answer to a write: wait for it
			// by reading it.
			_ = a.SetReadDeadline(time.Now().Add(time.Second))
			_, _ = a.Read(make([]byte, 1))
		}
	}
	if err == nil {
		t.Fatal("writes to a closed peer kept succeeding")
	}
}
