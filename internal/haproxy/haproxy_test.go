// The fake HAProxy listens on a unix socket, as HAProxy does: Unix only.

//go:build unix

package haproxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fake is a stand-in runtime API on a unix socket: it reads one command
// line per connection, records it, writes answer(cmd) and closes, as
// HAProxy's non-interactive mode does. It checks what the client sends and
// how it reads answers; what HAProxy does is test/haproxy's to prove.
type fake struct {
	ln   net.Listener
	mu   sync.Mutex
	cmds []string
	wg   sync.WaitGroup
}

func startFake(dir string, answer func(cmd string) string) (*fake, error) {
	ln, err := net.Listen("unix", filepath.Join(dir, "admin.sock"))
	if err != nil {
		return nil, err
	}
	f := &fake{ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				cmd := strings.TrimSuffix(line, "\n")
				f.mu.Lock()
				f.cmds = append(f.cmds, cmd)
				f.mu.Unlock()
				if a := answer(cmd); a != "" {
					c.Write([]byte(a))
				}
			}()
		}
	}()
	return f, nil
}

func (f *fake) addr() string { return f.ln.Addr().String() }

func (f *fake) close() { f.ln.Close(); f.wg.Wait() }

func (f *fake) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

func newFake(t *testing.T, answer func(cmd string) string) (*fake, *Client) {
	t.Helper()
	f, err := startFake(t.TempDir(), answer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	c, err := New(f.addr())
	if err != nil {
		t.Fatal(err)
	}
	return f, c
}

func statCSV(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/show-stat-2.6.csv")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseAddr(t *testing.T) {
	for _, tc := range []struct{ in, network, address string }{
		{"/run/haproxy/admin.sock", "unix", "/run/haproxy/admin.sock"},
		{"unix:/run/haproxy/admin.sock", "unix", "/run/haproxy/admin.sock"},
		{"unix@/run/admin.sock", "unix", "/run/admin.sock"},
		{"./admin.sock", "unix", "./admin.sock"},
		{"admin.sock", "unix", "admin.sock"},
		{"127.0.0.1:9999", "tcp", "127.0.0.1:9999"},
		{"tcp:127.0.0.1:9999", "tcp", "127.0.0.1:9999"},
		{"ipv4@127.0.0.1:9999", "tcp", "127.0.0.1:9999"},
		{"ipv6@[::1]:9999", "tcp", "[::1]:9999"},
		{"lb.internal:9999", "tcp", "lb.internal:9999"},
	} {
		n, a, err := parseAddr(tc.in)
		if err != nil || n != tc.network || a != tc.address {
			t.Errorf("parseAddr(%q) = %q, %q, %v; want %q, %q", tc.in, n, a, err, tc.network, tc.address)
		}
	}
	for _, bad := range []string{"", "unix:", "tcp:nohost", "ipv4@127.0.0.1", "haproxy"} {
		if _, _, err := parseAddr(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("parseAddr(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

// TestCommandsSent: each operation sends exactly one line, and names or
// values that could smuggle a second command (spaces, ';', line breaks)
// are refused before anything is sent.
func TestCommandsSent(t *testing.T) {
	f, c := newFake(t, func(string) string { return "\n" })
	ctx := context.Background()
	if err := c.SetWeight(ctx, "app", "blue", 42); err != nil {
		t.Fatal(err)
	}
	if err := c.SetWeight(ctx, "be_app.v2", "web-1:a", 0); err != nil {
		t.Fatal(err)
	}
	if err := c.SetState(ctx, "app", "green", Drain); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"set server app/blue weight 42",
		"set server be_app.v2/web-1:a weight 0",
		"set server app/green state drain",
	}
	for _, bad := range []struct {
		name string
		err  error
	}{
		{"app;shutdown sessions server app/blue", c.SetWeight(ctx, "app;shutdown sessions server app/blue", "x", 1)},
		{"space in server", c.SetWeight(ctx, "app", "blue weight 0", 1)},
		{"slash in server", c.SetState(ctx, "app", "a/b", Ready)},
		{"newline in backend", c.SetState(ctx, "app\nshow info", "blue", Ready)},
		{"empty server", c.SetWeight(ctx, "app", "", 1)},
		{"weight above 256", c.SetWeight(ctx, "app", "blue", 257)},
		{"negative weight", c.SetWeight(ctx, "app", "blue", -1)},
		{"bad state", c.SetState(ctx, "app", "blue", State("up"))},
		{"two commands", func() error { _, err := c.Command(ctx, "show info; show stat"); return err }()},
		{"line break", func() error { _, err := c.Command(ctx, "show info\nshow stat"); return err }()},
		{"backend with space (Servers)", func() error { _, err := c.Servers(ctx, "app 4 -1"); return err }()},
	} {
		if !errors.Is(bad.err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", bad.name, bad.err)
		}
	}
	got := f.commands()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("sent %q\nwant %q", got, want)
	}
}

// TestAnswers: HAProxy's error answers (2.6 wording, copied from a real
// session) become the package's sentinels.
func TestAnswers(t *testing.T) {
	for _, tc := range []struct {
		answer string
		want   error
	}{
		{"No such server.\n\n", ErrNoServer},
		{"No such backend.\n\n", ErrNoBackend},
		{"Permission denied\n\n", ErrPermission},
		{"Absolute weight can only be between 0 and 256 inclusive.\n\n", ErrCommand},
		{"Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n\n", ErrCommand},
		{"Unknown command, but maybe one of the following ones is a better match:\n  help\n\n", ErrCommand},
	} {
		_, c := newFake(t, func(string) string { return tc.answer })
		err := c.SetWeight(context.Background(), "app", "blue", 10)
		if !errors.Is(err, tc.want) {
			t.Errorf("answer %q: %v, want %v", firstLine(tc.answer), err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), strings.TrimSuffix(firstLine(tc.answer), ".")) {
			t.Errorf("answer %q: the error %q does not quote HAProxy", firstLine(tc.answer), err)
		}
	}
}

func TestSocketErrors(t *testing.T) {
	c, err := New(filepath.Join(t.TempDir(), "missing.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Servers(context.Background(), "app"); !errors.Is(err, ErrSocket) {
		t.Errorf("missing socket: %v, want ErrSocket", err)
	}

	// A peer that never answers: the context's deadline ends the wait.
	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, "mute.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			held <- c
		}
	}()
	c, _ = New(ln.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = c.Command(ctx, "show info")
	if !errors.Is(err, ErrSocket) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("mute peer: %v, want ErrSocket and DeadlineExceeded", err)
	}
	select {
	case conn := <-held:
		conn.Close()
	default:
	}
}

func TestServers(t *testing.T) {
	csv := statCSV(t)
	f, c := newFake(t, func(cmd string) string {
		if cmd == "show stat app 4 -1" {
			return csv
		}
		return "No such proxy.\n\n"
	})
	ctx := context.Background()
	all, err := c.Servers(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 {
		t.Fatalf("%d servers, want 4: %+v", len(all), all)
	}
	byName := map[string]Server{}
	for _, s := range all {
		byName[s.Name] = s
	}
	blue, green, sick, nocheck := byName["blue"], byName["green"], byName["sick"], byName["nocheck"]
	if blue.Status != "DRAIN" || !blue.Draining() || blue.Weight != 100 || !blue.Healthy() || blue.CheckStatus != "L7OK" || blue.Addr != "127.0.0.1:18081" {
		t.Errorf("blue (drained, healthy) = %+v", blue)
	}
	if !green.InMaint() || green.HasCheck() || green.Up() || green.Weight != 0 {
		t.Errorf("green (maintenance) = %+v", green)
	}
	if sick.Status != "UP 4/5" || !sick.Up() || sick.Healthy() || sick.CheckStatus != "L7STS" || sick.CheckDesc != "Layer7 wrong status" ||
		sick.CheckRise != 2 || sick.CheckFall != 5 || sick.CheckHealth != 5 {
		t.Errorf("sick (up, one failed check) = %+v", sick)
	}
	if nocheck.Status != "no check" || nocheck.HasCheck() || nocheck.Up() {
		t.Errorf("nocheck = %+v", nocheck)
	}
	if _, err := c.Servers(ctx, "nope"); !errors.Is(err, ErrNoBackend) {
		t.Errorf("unknown backend: %v, want ErrNoBackend", err)
	}
	if _, err := c.Server(ctx, "app", "purple"); !errors.Is(err, ErrNoServer) {
		t.Errorf("unknown server: %v, want ErrNoServer", err)
	}
	if s, err := c.Server(ctx, "app", "sick"); err != nil || s.Name != "sick" {
		t.Errorf("Server(sick) = %+v, %v", s, err)
	}
	if got := f.commands()[0]; got != "show stat app 4 -1" {
		t.Errorf("sent %q", got)
	}
}

func TestParseStat(t *testing.T) {
	// Columns are found by name: reordered, quoted and missing optional
	// columns read alike; other proxies' lines are skipped.
	out := "# svname,pxname,status,scur,weight,check_desc,check_rise,check_fall,check_health,\n" +
		"FRONTEND,fe,OPEN,3,,,,,,\n" +
		"a,app,UP,7,10,\"passed, with a comma\",2,3,4,\n" +
		"a,other,DOWN,0,1,,2,3,0,\n" +
		"BACKEND,app,UP,7,10,,,,,\n"
	got, err := parseStat(out, "app")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != "a" || got[0].Sessions != 7 || got[0].Weight != 10 || got[0].CheckDesc != "passed, with a comma" || !got[0].Healthy() {
		t.Errorf("parseStat = %+v", got)
	}
	for _, bad := range []string{"", "garbage\n", "# pxname,svname\napp,a\n", "# a,b\n\"unterminated\n"} {
		if _, err := parseStat(bad, "app"); !errors.Is(err, ErrCommand) {
			t.Errorf("parseStat(%q) = %v, want ErrCommand", bad, err)
		}
	}
}

// TestSwitchRefusesUnhealthy: with the new server failing its checks,
// Switch reads the servers and changes nothing.
func TestSwitchRefusesUnhealthy(t *testing.T) {
	csv := statCSV(t)
	f, c := newFake(t, func(string) string { return csv })
	rep, err := c.Switch(context.Background(), "app", "blue", "sick", SwitchOptions{})
	if !errors.Is(err, ErrUnhealthy) || !rep.Refused || rep.RolledBack {
		t.Errorf("Switch to a failing server: %v, %+v", err, rep)
	}
	if _, err := c.Switch(context.Background(), "app", "blue", "green", SwitchOptions{}); !errors.Is(err, ErrUnhealthy) {
		t.Errorf("Switch to a server in maintenance: %v, want ErrUnhealthy", err)
	}
	if _, err := c.Switch(context.Background(), "app", "blue", "nocheck", SwitchOptions{}); !errors.Is(err, ErrNoCheck) {
		t.Errorf("Switch to an unchecked server: %v, want ErrNoCheck", err)
	}
	if err := c.Canary(context.Background(), "app", "blue", "sick", 10); !errors.Is(err, ErrUnhealthy) {
		t.Errorf("Canary on a failing server: %v, want ErrUnhealthy", err)
	}
	for _, cmd := range f.commands() {
		if !strings.HasPrefix(cmd, "show stat ") {
			t.Errorf("a refused switch sent %q", cmd)
		}
	}
}
