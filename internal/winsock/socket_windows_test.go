package winsock

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// A held socket is served from a duplicate (here in this process, as a
// generation would in its own), keeps the port exclusively, and refuses
// to be duplicated once closed. The cross-process case is tested in
// internal/handoff (TestSupervisedSpawn).
func TestListenSocket(t *testing.T) {
	s, err := ListenSocket("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, ok := s.Addr().(*net.TCPAddr)
	if !ok || a.Port == 0 || s.Network() != "tcp4" {
		t.Fatalf("addr %v (%T), network %q", s.Addr(), s.Addr(), s.Network())
	}
	if _, err := ListenSocket("tcp4", a.String()); err == nil {
		t.Fatal("a second socket bound the same port")
	}
	info, err := s.Duplicate(uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	l, err := ListenerFromProtocolInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, "hi")
		c.Close()
	}()
	c, err := net.DialTimeout("tcp4", a.String(), bound)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(bound))
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "hi" {
		t.Fatalf("read %q", b)
	}
	// Closing our copy leaves the duplicate serving.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Duplicate(uint32(os.Getpid())); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Duplicate after Close: %v", err)
	}
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
	}()
	c, err = net.DialTimeout("tcp4", a.String(), bound)
	if err != nil {
		t.Fatalf("the duplicate no longer accepts after the held socket's Close: %v", err)
	}
	c.Close()
}

func TestListenSocketBadNetwork(t *testing.T) {
	if _, err := ListenSocket("udp", "127.0.0.1:0"); err == nil {
		t.Fatal("udp accepted")
	}
}
