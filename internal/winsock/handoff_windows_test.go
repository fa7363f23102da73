package winsock

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const helperEnv = "BATON_WINSOCK_HELPER_CHILD"

// TestHelperChild is the new process of TestHandoff: it reads the protocol
// info from stdin, rebuilds the listener and serves HTTP answering its pid.
func TestHelperChild(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for TestHandoff")
	}
	info, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<16))
	if err != nil {
		t.Fatal(err)
	}
	l, err := ListenerFromProtocolInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, l, strconv.Itoa(os.Getpid()))
	os.Stdout.WriteString("ready\n")
	time.Sleep(2 * bound) // the parent kills us; this only bounds an orphan
	os.Exit(0)
}

// syncBuffer collects the child's stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestHandoff hands the listening socket to a child process while clients
// keep connecting: no request may fail, both processes answer, and requests
// started after the parent's Close are answered by the child.
func TestHandoff(t *testing.T) {
	deadline := time.Now().Add(25 * time.Second)
	l := listenLoopback(t)
	parent := strconv.Itoa(os.Getpid())
	serveHTTP(t, l, parent)
	ld := startLoad("http://"+l.Addr().String()+"/", 3)
	defer ld.finish(t)
	if !ld.waitFor(deadline, func() bool { return ld.counts[parent] >= 5 || len(ld.fails) > 0 }) {
		t.Fatal("the parent did not answer")
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestHelperChild$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ld.finish(t) // before the child goes away
		cmd.Process.Kill()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(bound):
			t.Error("the child did not exit after Kill")
		}
		if t.Failed() {
			t.Logf("child stderr:\n%s", stderr.String())
		}
	}()
	child := strconv.Itoa(cmd.Process.Pid)

	info, err := Duplicate(l.Socket(), uint32(cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write(info); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
		io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-ready:
		if strings.TrimSpace(line) != "ready" {
			t.Fatalf("child said %q, want ready", line)
		}
	case <-time.After(time.Until(deadline)):
		t.Fatal("the child did not get ready")
	}

	// Both processes accept now. Give the child a chance to answer while
	// the parent still does (not required: the kernel picks the acceptor).
	ld.waitFor(time.Now().Add(5*time.Second), func() bool { return ld.counts[child] >= 3 || len(ld.fails) > 0 })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ld.mark()
	if !ld.waitFor(deadline, func() bool { return ld.late[child] >= 20 || len(ld.fails) > 0 }) {
		t.Fatal("too few answers from the child after the parent closed")
	}

	ld.mu.Lock()
	defer ld.mu.Unlock()
	t.Logf("answers by pid: %v (parent %s, child %s); after the parent's Close: %v", ld.counts, parent, child, ld.late)
	if ld.counts[parent] == 0 || ld.counts[child] == 0 {
		t.Errorf("want answers from both the parent and the child")
	}
	for body, n := range ld.late {
		if body != child {
			t.Errorf("%d answers from %q to requests started after the parent's Close", n, body)
		}
	}
}
