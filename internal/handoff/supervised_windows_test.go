package handoff

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/winsock"
	"golang.org/x/sys/windows"
)

// Generous: Wine is about 10x slower than Windows. Nothing asserts on
// timing; this only keeps a broken build from hanging.
const winBound = 30 * time.Second

// helperEnv selects what the re-executed test binary does (TestHelper).
const helperEnv = "BATON_HANDOFF_WIN_HELPER"

// TestHelper is the other process of the tests below, selected by
// helperEnv:
//
//	serve       a supervised generation: takes its listening socket, prints
//	            on stdout and stderr, gets ready, serves one connection,
//	            exits with code 7
//	sleep       a supervised generation that gets ready and sleeps
//	supervisor  spawns a supervised "sleep" generation, prints its pid and
//	            sleeps (the test then kills this process)
//	link        a generation on the link of EnvLink (see TestLinkRoundTrip)
func TestHelper(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process")
	}
	var err error
	switch mode {
	case "serve":
		err = helperServe()
	case "sleep":
		err = helperSleep()
	case "supervisor":
		err = helperSupervisor()
	case "link":
		err = helperLink()
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

func helperServe() error {
	in, err := Receive(winBound, 0)
	if err != nil || in == nil {
		return fmt.Errorf("receive: %v (inherited %v)", err, in != nil)
	}
	if len(in.Msg.StderrRelay) != 0 {
		return fmt.Errorf("a supervised child got a stderr relay: %v", in.Msg.StderrRelay)
	}
	before := os.Stderr
	if err := in.RestoreStderr(); err != nil || os.Stderr != before {
		return fmt.Errorf("RestoreStderr is not a no-op: %v", err)
	}
	var ln *winsock.Listener
	for _, d := range in.Msg.Files {
		if d.Kind == KindListener && d.Network == "tcp4" {
			if ln, err = winsock.ListenerFromProtocolInfo(d.Data); err != nil {
				return err
			}
		}
	}
	if ln == nil {
		return fmt.Errorf("no listener in %+v", in.Msg.Files)
	}
	fmt.Printf("out: generation %d state %q before ready\n", in.Msg.Generation, in.State)
	fmt.Fprintf(os.Stderr, "err: before ready\n")
	ctx, cancel := context.WithTimeout(context.Background(), winBound)
	defer cancel()
	if err := in.Ready(ctx); err != nil {
		return err
	}
	fmt.Printf("out: after ack\n")
	fmt.Fprintf(os.Stderr, "err: after ack\n")
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	fmt.Fprintf(c, "served by %d\n", os.Getpid())
	c.Close()
	ln.Close()
	fmt.Fprintf(os.Stderr, "err: bye\n")
	os.Exit(7)
	return nil
}

func helperSleep() error {
	in, err := Receive(winBound, 0)
	if err != nil || in == nil {
		return fmt.Errorf("receive: %v (inherited %v)", err, in != nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), winBound)
	defer cancel()
	if err := in.Ready(ctx); err != nil {
		return err
	}
	time.Sleep(3 * winBound) // killed by the test; this only bounds an orphan
	return nil
}

func helperSupervisor() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), winBound)
	defer cancel()
	c, err := Spawn(ctx, SpawnConfig{
		Binary:     exe,
		Args:       []string{"-test.run=^TestHelper$"},
		Env:        append(os.Environ(), helperEnv+"=sleep"),
		Supervised: true,
		Stdout:     io.Discard,
		Stderr:     os.Stderr,
	})
	if err != nil {
		return err
	}
	if _, err := c.WaitReady(ctx); err != nil {
		return err
	}
	if err := c.Ack(false, false); err != nil {
		return err
	}
	fmt.Printf("child %d\n", c.PID)
	time.Sleep(3 * winBound) // killed by the test
	return nil
}

// lines collects what is written to it, one Write at a time.
type lines struct {
	mu     sync.Mutex
	writes []string
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes = append(l.writes, string(p))
	return len(p), nil
}

func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.writes...)
}

// waitFor waits until a Write equal to line has been seen.
func (l *lines) waitFor(t *testing.T, line string) {
	t.Helper()
	deadline := time.Now().Add(winBound)
	for time.Now().Before(deadline) {
		for _, w := range l.all() {
			if w == line {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no write %q; got %q", line, l.all())
}

func helperCmd(mode string, args ...string) (string, []string, []string) {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return exe, append([]string{"-test.run=^TestHelper$"}, args...), append(os.Environ(), helperEnv+"="+mode)
}

// A supervised generation gets the supervisor's listening socket and
// serves a connection of ours; its stdout and stderr lines reach the
// supervisor's writers, whole, before and after the go-ahead; it gets no
// stderr relay; and its exit after the go-ahead is seen, with code and
// stderr tail.
func TestSupervisedSpawn(t *testing.T) {
	held, err := ListenSocket("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	var stdout, stderr lines
	exe, args, env := helperCmd("serve")
	ctx, cancel := context.WithTimeout(context.Background(), winBound)
	defer cancel()
	c, err := Spawn(ctx, SpawnConfig{
		Binary:     exe,
		Args:       args,
		Env:        env,
		Items:      []Item{held.Item(FileDesc{})},
		Message:    Handoff{Generation: 5},
		State:      []byte("s=1"),
		Supervised: true,
		Stdout:     &stdout,
		Stderr:     &stderr,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Abort("test over")
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Ack(false, false); err != nil {
		t.Fatal(err)
	}
	stdout.waitFor(t, "out: generation 5 state \"s=1\" before ready\n")
	stderr.waitFor(t, "err: before ready\n")
	stdout.waitFor(t, "out: after ack\n")
	stderr.waitFor(t, "err: after ack\n")

	conn, err := net.DialTimeout("tcp4", held.Addr().String(), winBound)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(winBound))
	got, err := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if want := fmt.Sprintf("served by %d\n", c.PID); got != want {
		t.Fatalf("got %q (%v), want %q", got, err, want)
	}

	select {
	case <-c.Exited():
	case <-time.After(winBound):
		t.Fatal("the child did not exit")
	}
	ee := c.ExitErr()
	if ee == nil || ee.ExitCode != 7 || !strings.Contains(ee.StderrTail, "err: bye") {
		t.Fatalf("exit error %+v: want code 7 and the stderr tail", ee)
	}
	stderr.waitFor(t, "err: bye\n")
	if err := c.Kill(); err != nil {
		t.Errorf("Kill of an exited child: %v", err)
	}
	for _, w := range append(stdout.all(), stderr.all()...) {
		if !strings.HasSuffix(w, "\n") || strings.Count(w, "\n") != 1 {
			t.Errorf("write %q is not one whole line", w)
		}
	}
}

// A supervised generation can be killed after the go-ahead, and its exit
// is reported.
func TestSupervisedKillAfterAck(t *testing.T) {
	exe, args, env := helperCmd("sleep")
	ctx, cancel := context.WithTimeout(context.Background(), winBound)
	defer cancel()
	c, err := Spawn(ctx, SpawnConfig{Binary: exe, Args: args, Env: env, Supervised: true, Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Abort("test over")
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Ack(false, false); err != nil {
		t.Fatal(err)
	}
	if c.ExitErr() != nil {
		t.Fatal("ExitErr before the exit")
	}
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Exited():
	case <-time.After(winBound):
		t.Fatal("the child did not exit after Kill")
	}
	if ee := c.ExitErr(); ee == nil || ee.ExitCode == 0 {
		t.Fatalf("exit error %+v after Kill", ee)
	}
}

// When the supervisor is terminated (TerminateProcess: no code of its own
// runs), its supervised generations die with it: the system closes the
// job's last handle.
func TestSupervisedDieWithSupervisor(t *testing.T) {
	exe, args, env := helperCmd("supervisor")
	cmd := exec.Command(exe, args...)
	cmd.Env = env
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pidc := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "child "); ok {
				n, _ := strconv.Atoi(rest)
				pidc <- n
			}
		}
		close(pidc)
	}()
	var pid int
	select {
	case pid = <-pidc:
	case <-time.After(winBound):
		t.Fatal("the supervisor did not start its generation")
	}
	if pid <= 0 {
		t.Fatal("the supervisor failed to start its generation")
	}
	h, err := windows.OpenProcess(windows.SYNCHRONIZE|windows.PROCESS_QUERY_LIMITED_INFORMATION|windows.PROCESS_TERMINATE, false, uint32(pid))
	if err != nil {
		t.Fatal(err)
	}
	defer windows.CloseHandle(h)
	defer windows.TerminateProcess(h, 1) // if the test fails
	if ev, _ := windows.WaitForSingleObject(h, 0); ev != uint32(windows.WAIT_TIMEOUT) {
		t.Fatal("the generation is not running before the supervisor is killed")
	}
	if err := cmd.Process.Kill(); err != nil { // TerminateProcess
		t.Fatal(err)
	}
	cmd.Wait()
	if ev, err := windows.WaitForSingleObject(h, uint32(winBound/time.Millisecond)); ev != windows.WAIT_OBJECT_0 {
		t.Fatalf("the generation (pid %d) outlived its terminated supervisor (%d, %v)", pid, ev, err)
	}
}

// An error of Spawn that is not about the job or the pipes still reads
// well for a supervised child.
func TestSupervisedMissingBinary(t *testing.T) {
	_, err := Spawn(context.Background(), SpawnConfig{Binary: `C:\nonexistent\app.exe`, Supervised: true})
	if !errors.Is(err, ErrBinary) {
		t.Fatalf("err = %v, want ErrBinary", err)
	}
}
