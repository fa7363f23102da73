//go:build unix

package baton

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/handoff"
)

// inherit puts a duplicate of c's socket into u's pool, as New does with
// what a previous generation handed over (local == nil) or with a socket
// from systemd socket activation (local set), and closes c.
func inherit(t *testing.T, u *Upgrader, kind handoff.Kind, network, addr string, c interface {
	syscall.Conn
	io.Closer
}, local net.Addr) {
	t.Helper()
	f, err := handoff.DupFile(c, network+":"+addr)
	if err != nil {
		t.Fatal(err)
	}
	if ul, ok := c.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	c.Close()
	u.mu.Lock()
	u.pool = append(u.pool, pooled{desc: handoff.FileDesc{Kind: kind, Network: network, Addr: addr}, file: f, local: local})
	u.mu.Unlock()
}

func claimed(t *testing.T, u *Upgrader) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.pool) != 0 {
		t.Fatalf("the inherited socket was not claimed: %+v", u.pool)
	}
}

// Listen and ListenPacket return the same dynamic types in a first
// generation, in an upgraded one (sockets from the handoff, Accept gated
// until Ready) and under socket activation (baton run), for tcp and unix
// listeners and udp and unixgram packet conns.
func TestListenTypesSameInEveryGeneration(t *testing.T) {
	dir := t.TempDir()
	type got struct {
		ln net.Listener
		pc net.PacketConn
	}
	gens := map[string]map[string]got{} // generation kind -> network -> what Listen returned

	// A first generation creates its sockets.
	first := newTestUpgrader(t, Options{})
	gens["first"] = map[string]got{}
	for _, nw := range []string{"tcp", "unix"} {
		addr := "127.0.0.1:0"
		if nw == "unix" {
			addr = filepath.Join(dir, "first.sock")
		}
		ln, err := first.Listen(nw, addr)
		if err != nil {
			t.Fatal(err)
		}
		gens["first"][nw] = got{ln: ln}
	}
	for _, nw := range []string{"udp", "unixgram"} {
		addr := "127.0.0.1:0"
		if nw == "unixgram" {
			addr = filepath.Join(dir, "first.dgram")
		}
		pc, err := first.ListenPacket(nw, addr)
		if err != nil {
			t.Fatal(err)
		}
		gens["first"][nw] = got{pc: pc}
	}

	// An upgraded generation (and one under baton run, with sockets from
	// socket activation) takes them from its pool; both have a shut gate.
	for _, kind := range []string{"upgraded", "activated"} {
		if kind == "activated" {
			t.Setenv(envSupervisor, "test")
		}
		u := newTestUpgrader(t, Options{})
		if kind == "upgraded" {
			u.acceptGate = newGate() // as New does with a parent
		}
		if u.acceptGate == nil {
			t.Fatal("no accept gate in a generation that is not the first")
		}
		gens[kind] = map[string]got{}
		for _, nw := range []string{"tcp", "unix", "udp", "unixgram"} {
			var c interface {
				syscall.Conn
				io.Closer
			}
			var local net.Addr
			var err error
			addr := "127.0.0.1:0"
			if strings.HasPrefix(nw, "unix") {
				addr = filepath.Join(dir, kind+"."+nw)
			}
			pkind := handoff.KindListener
			if nw == "tcp" || nw == "unix" {
				var ln net.Listener
				ln, err = net.Listen(nw, addr)
				if err == nil {
					c, local = ln.(interface {
						syscall.Conn
						io.Closer
					}), ln.Addr()
				}
			} else {
				pkind = handoff.KindPacket
				var pc net.PacketConn
				pc, err = net.ListenPacket(nw, addr)
				if err == nil {
					c, local = pc.(interface {
						syscall.Conn
						io.Closer
					}), pc.LocalAddr()
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			addr = local.String()
			ask := nw
			if kind == "upgraded" {
				local = nil // matched by network and address
			} else if nw == "tcp" {
				ask = "tcp4" // matched by bound address only
			} else if nw == "udp" {
				ask = "udp4"
			}
			inherit(t, u, pkind, nw, addr, c, local)
			if pkind == handoff.KindListener {
				ln, err := u.Listen(ask, addr)
				if err != nil {
					t.Fatal(err)
				}
				gens[kind][nw] = got{ln: ln}
			} else {
				pc, err := u.ListenPacket(ask, addr)
				if err != nil {
					t.Fatal(err)
				}
				gens[kind][nw] = got{pc: pc}
			}
			claimed(t, u)
		}
	}

	for _, nw := range []string{"tcp", "unix", "udp", "unixgram"} {
		want := gens["first"][nw]
		for _, kind := range []string{"upgraded", "activated"} {
			g := gens[kind][nw]
			if a, b := fmt.Sprintf("%T/%T", want.ln, want.pc), fmt.Sprintf("%T/%T", g.ln, g.pc); a != b {
				t.Errorf("%s: first generation got %s, %s generation got %s", nw, a, kind, b)
			}
		}
	}
	if _, ok := gens["first"]["tcp"].ln.(*net.TCPListener); ok {
		t.Error("Listen returned the bare *net.TCPListener in a first generation")
	}

	// SetDeadline holds on every one of them, also while Accept waits for
	// Ready (upgraded and activated generations have not called it).
	for kind, m := range gens {
		for _, nw := range []string{"tcp", "unix"} {
			ln := m[nw].ln
			d, ok := ln.(interface{ SetDeadline(time.Time) error })
			if !ok {
				t.Fatalf("%s %s: %T has no SetDeadline", kind, nw, ln)
			}
			if err := d.SetDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
				t.Fatalf("%s %s: SetDeadline: %v", kind, nw, err)
			}
			done := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if c != nil {
					c.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				var ne net.Error
				if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
					t.Errorf("%s %s: Accept after the deadline: %v, want a timeout", kind, nw, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s %s: Accept ignored its deadline", kind, nw)
			}
			d.SetDeadline(time.Time{})
		}
	}
}

// A deadline set while Accept is already waiting for Ready wakes it, and a
// gated Accept still serves once Ready comes.
func TestGatedAcceptDeadlineSetWhileWaiting(t *testing.T) {
	t.Setenv(envSupervisor, "test")
	u := newTestUpgrader(t, Options{})
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		done <- err
	}()
	gl, ok := ln.(*gatedListener)
	if !ok {
		t.Fatalf("a supervised generation's listener is %T, want *gatedListener", ln)
	}
	for waitUntil := time.Now().Add(10 * time.Second); gl.waiting.Load() == 0; runtime.Gosched() {
		if time.Now().After(waitUntil) {
			t.Fatal("Accept never started waiting for the gate")
		}
	}
	d, ok := ln.(interface{ SetDeadline(time.Time) error })
	if !ok {
		t.Fatalf("%T has no SetDeadline", ln)
	}
	d.SetDeadline(time.Now())
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Accept: %v, want a deadline error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SetDeadline did not wake a gated Accept")
	}
	d.SetDeadline(time.Time{})
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept after Ready: %v", err)
	}
	s.Close()
}

func writeLine(f *os.File, s string) error {
	_, err := io.WriteString(f, s+"\n")
	return err
}

// File returns the app's own copy, created or inherited: closing it does
// not touch baton's (the handoff still has a working file), and baton
// closing its own (Stop, handover) leaves the app's open.
func TestFileIsTheAppsOwnCopy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	open := func() (*os.File, error) {
		return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	}
	notInherited := func() (*os.File, error) { return nil, errors.New("not inherited") }
	itemOf := func(u *Upgrader, name string) *os.File {
		u.mu.Lock()
		defer u.mu.Unlock()
		for _, e := range u.entries {
			if e.desc.Kind == handoff.KindFile && e.desc.Name == name {
				return e.item.File
			}
		}
		t.Fatalf("no entry for %q", name)
		return nil
	}

	for _, kind := range []string{"first", "inherited"} {
		u := newTestUpgrader(t, Options{})
		var f, g *os.File
		var err error
		if kind == "first" {
			f, err = u.File("a", open)
			if err == nil {
				g, err = u.File("b", open)
			}
		} else {
			for _, name := range []string{"a", "b"} {
				h, err := open()
				if err != nil {
					t.Fatal(err)
				}
				u.pool = append(u.pool, pooled{desc: handoff.FileDesc{Kind: handoff.KindFile, Name: name}, file: h})
			}
			f, err = u.File("a", notInherited)
			if err == nil {
				g, err = u.File("b", notInherited)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		// The app closes its copy: what baton hands over still works.
		item := itemOf(u, "a")
		if item == f {
			t.Fatalf("%s: File returned the very file baton hands over", kind)
		}
		f.Close()
		if err := writeLine(item, kind+": baton's copy after the app closed its own"); err != nil {
			t.Errorf("%s: baton's copy broken by the app's Close: %v", kind, err)
		}
		// Baton closes its copies (Stop): the app's stays open.
		u.Stop()
		if err := writeLine(g, kind+": the app's copy after Stop"); err != nil {
			t.Errorf("%s: the app's copy closed by Stop: %v", kind, err)
		}
		g.Close()
	}
	b, _ := os.ReadFile(path)
	for _, kind := range []string{"first", "inherited"} {
		for _, line := range []string{kind + ": baton's copy after the app closed its own", kind + ": the app's copy after Stop"} {
			if !strings.Contains(string(b), line+"\n") {
				t.Errorf("missing %q in the file:\n%s", line, b)
			}
		}
	}
}

// Real processes: this test process is generation 1 and upgrades to a copy
// of the test binary (TestGenerationHelper), which upgrades once more.
// Every generation reports the dynamic types Listen and ListenPacket gave
// it, closes its copy of the named file after writing a line, and hands
// it over: the next generation still gets a working file.
func TestUpgradeKeepsTypesAndFile(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "app.log")
	u := newTestUpgrader(t, Options{
		Binary:         os.Args[0],
		Args:           []string{"-test.run=^TestGenerationHelper$"},
		ForceExitAfter: -1,
		Logger:         slog.New(slog.DiscardHandler),
	})
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := u.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := u.File("log", func() (*os.File, error) {
		return os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	writeLine(f, "gen 1")
	f.Close()
	t.Setenv(envHelper, "upgrade")
	t.Setenv(envHelperDir, dir)
	// Later generations ask for what this one asked for.
	t.Setenv(envHelperTCP, "127.0.0.1:0")
	t.Setenv(envHelperUDP, "127.0.0.1:0")
	t.Setenv(envHelperBound, ln.Addr().String()+" "+pc.LocalAddr().String())
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Upgrade(t.Context()); err != nil {
		t.Fatalf("upgrade to generation 2: %v", err)
	}
	want := fmt.Sprintf("%T %T", ln, pc)
	for gen := 2; gen <= 3; gen++ {
		if got := waitReport(t, dir, gen); got != want {
			t.Errorf("generation %d got %q, generation 1 got %q", gen, got, want)
		}
	}
	b, _ := os.ReadFile(logPath)
	if string(b) != "gen 1\ngen 2\ngen 3\n" {
		t.Errorf("the named file, written by each generation after the previous one closed its copy:\n%s", b)
	}
}

// Socket activation for real: a child gets the sockets at fds 3 and 4 with
// LISTEN_FDS=2 (it sets LISTEN_PID itself, it cannot be known before).
func TestSocketActivatedTypes(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	lf, _ := ln.(*net.TCPListener).File()
	pf, _ := pc.(*net.UDPConn).File()
	defer lf.Close()
	defer pf.Close()

	u := newTestUpgrader(t, Options{})
	fln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fpc, err := u.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}

	for _, supervised := range []bool{false, true} {
		p := runHelper(t, dir, supervised, []*os.File{lf, pf}, ln.Addr().String(), pc.LocalAddr().String())
		if err := p.Wait(); err != nil {
			t.Fatalf("helper (supervised %v): %v", supervised, err)
		}
		if got, want := waitReport(t, dir, 1), fmt.Sprintf("%T %T", fln, fpc); got != want {
			t.Errorf("socket-activated (supervised %v): %q, a first generation got %q", supervised, got, want)
		}
		os.Remove(filepath.Join(dir, "gen-1"))
	}
}

// The helper process's environment (see TestGenerationHelper).
const (
	envHelper    = "BATON_TEST_HELPER" // "upgrade" or "activated"
	envHelperDir = "BATON_TEST_HELPER_DIR"
	envHelperTCP = "BATON_TEST_HELPER_TCP"
	envHelperUDP = "BATON_TEST_HELPER_UDP"
	// The addresses the inherited sockets are bound to: a socket made anew
	// instead would not be.
	envHelperBound = "BATON_TEST_HELPER_BOUND"
)

func runHelper(t *testing.T, dir string, supervised bool, files []*os.File, tcp, udp string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestGenerationHelper$")
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), envHelper+"=activated", envHelperDir+"="+dir, envHelperTCP+"="+tcp, envHelperUDP+"="+udp,
		envHelperBound+"="+tcp+" "+udp, fmt.Sprintf("LISTEN_FDS=%d", len(files)))
	if os.Getenv("GORACE") == "" {
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0") // no 1 s pause at exit under -race
	}
	if supervised {
		cmd.Env = append(cmd.Env, envSupervisor+"=test")
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func waitReport(t *testing.T, dir string, gen int) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("gen-%d", gen)))
		if err == nil {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no report from generation %d", gen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestGenerationHelper is not a test: it is the program run as a later
// generation by TestUpgradeKeepsTypesAndFile, and as a socket-activated one
// by TestSocketActivatedTypes.
func TestGenerationHelper(t *testing.T) {
	mode := os.Getenv(envHelper)
	if mode == "" {
		t.Skip("helper process of TestUpgradeKeepsTypesAndFile and TestSocketActivatedTypes")
	}
	if err := generationHelper(mode); err != nil {
		fmt.Fprintf(os.Stderr, "generation helper (%s, pid %d): %v\n", mode, os.Getpid(), err)
		os.Exit(1)
	}
	os.Exit(0)
}

func generationHelper(mode string) error {
	if mode == "activated" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	u, err := New(Options{UpgradeSignal: NoSignal, ForceExitAfter: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer u.Stop()
	ln, err := u.Listen("tcp", os.Getenv(envHelperTCP))
	if err != nil {
		return err
	}
	pc, err := u.ListenPacket("udp", os.Getenv(envHelperUDP))
	if err != nil {
		return err
	}
	if got, want := ln.Addr().String()+" "+pc.LocalAddr().String(), os.Getenv(envHelperBound); got != want {
		return fmt.Errorf("sockets bound to %s, the inherited ones are %s", got, want)
	}
	if mode == "upgrade" {
		f, err := u.File("log", func() (*os.File, error) { return nil, errors.New("not inherited") })
		if err != nil {
			return err
		}
		if err := writeLine(f, fmt.Sprintf("gen %d", u.Generation())); err != nil {
			return err
		}
		f.Close() // the next generation must still get it
	}
	if err := u.Ready(); err != nil {
		return err
	}
	dir := os.Getenv(envHelperDir)
	tmp := filepath.Join(dir, fmt.Sprintf("gen-%d.tmp", u.Generation()))
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%T %T", ln, pc), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, fmt.Sprintf("gen-%d", u.Generation()))); err != nil {
		return err
	}
	if mode == "upgrade" && u.Generation() < 3 {
		if _, err := u.Upgrade(context.Background()); err != nil {
			return fmt.Errorf("upgrade to generation %d: %w", u.Generation()+1, err)
		}
	}
	return nil
}
