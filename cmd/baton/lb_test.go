package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/haproxy"
	"github.com/baton-go/baton/internal/proctest"
	"github.com/baton-go/baton/internal/testenv"
)

// The real HAProxy runs in test/haproxy (TestBatonLB); here, what the CLI
// decides on its own side, against a stand-in runtime API on loopback.

// fakeHAProxy answers each runtime API command (one per connection, as
// HAProxy's non-interactive mode) with answer(cmd); it returns its
// address and the commands received.
func fakeHAProxy(t *testing.T, answer func(cmd string) string) (addr string, cmds <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil {
				cmd := strings.TrimSpace(line)
				select {
				case got <- cmd:
				default:
				}
				c.Write([]byte(answer(cmd)))
			}
			c.Close()
		}
	}()
	return ln.Addr().String(), got
}

func showStat(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../internal/haproxy/testdata/show-stat-2.6.csv")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLBUsageAndUnreachable(t *testing.T) {
	closed, err := proctest.FreeAddr("tcp") // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	missing := testenv.TempDir(t) + "/none.sock"
	cases := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"lb"}, exitUsage, "needs a subcommand"},
		{[]string{"lb", "status", "--backend", "app"}, exitUsage, `required flag(s) "haproxy" not set`},
		{[]string{"lb", "switch", "--haproxy", closed, "--backend", "app", "--from", "blue"}, exitUsage, `required flag(s) "to" not set`},
		{[]string{"lb", "canary", "--haproxy", closed, "--backend", "app", "--stable", "a", "--canary", "b"}, exitUsage, "--weight P"},
		{[]string{"lb", "canary", "--haproxy", closed, "--backend", "app", "--stable", "a", "--canary", "b", "--weight", "101"}, exitUsage, "--weight P"},
		{[]string{"lb", "state", "--haproxy", closed, "--backend", "app", "--server", "a", "--set", "up"}, exitUsage, `--set "up"`},
		{[]string{"lb", "status", "--haproxy", "nowhere", "--backend", "app"}, exitUsage, "neither a socket path nor host:port"},
		{[]string{"lb", "status", "--haproxy", closed, "--backend", "app;x"}, exitUsage, "backend name"},
		{[]string{"lb", "status", "--haproxy", closed, "--backend", "app"}, exitUnreachable, "lb status failed (unreachable)"},
		{[]string{"lb", "rollback", "--haproxy", missing, "--backend", "app", "--stable", "a", "--canary", "b"}, exitUnreachable, "lb rollback failed (unreachable)"},
	}
	for _, c := range cases {
		code, _, stderr := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.contains) {
			t.Errorf("baton %s: exit %d, stderr %q; want exit %d and %q", strings.Join(c.args, " "), code, stderr, c.code, c.contains)
		}
	}
	code, stdout, _ := runCLI(t, "lb", "switch", "--haproxy", closed, "--backend", "app", "--from", "a", "--to", "b", "--json")
	var rep lbReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != exitUnreachable || rep.OK || rep.Code != contract.CodeUnreachable || rep.Op != "switch" {
		t.Errorf("switch --json, HAProxy unreachable: exit %d, %+v (%v)\n%s", code, rep, err, stdout)
	}
}

// Status reads show stat into weights, shares of new traffic (draining,
// maintenance and down servers take none) and health.
func TestLBStatusShares(t *testing.T) {
	stat := showStat(t)
	addr, _ := fakeHAProxy(t, func(string) string { return stat })
	code, stdout, stderr := runCLI(t, "lb", "status", "--haproxy", addr, "--backend", "app", "--json")
	var rep lbReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != 0 {
		t.Fatalf("exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	want := map[string]struct {
		share  int
		health string
	}{
		"blue":    {0, "healthy"},    // DRAIN, weight 100
		"green":   {0, "maint"},      // MAINT
		"sick":    {50, "failing"},   // UP 4/5, weight 1
		"nocheck": {50, "unchecked"}, // no check, weight 1
	}
	for _, s := range rep.Servers {
		if w := want[s.Name]; s.Share != w.share || s.Health != w.health {
			t.Errorf("%s (%s, weight %d): share %d%% health %s; want %d%% %s", s.Name, s.Status, s.Weight, s.Share, s.Health, w.share, w.health)
		}
	}
	if len(rep.Servers) != len(want) {
		t.Errorf("%d servers, want %d", len(rep.Servers), len(want))
	}
	code, stdout, _ = runCLI(t, "lb", "status", "--haproxy", addr, "--backend", "app")
	if code != 0 || !strings.Contains(stdout, "SERVER") || !strings.Contains(stdout, "Layer7 wrong status") {
		t.Errorf("status table: exit %d\n%s", code, stdout)
	}
}

// HAProxy's refusals keep their meaning: a socket without "level admin"
// is forbidden (3), an unknown backend a usage error (2), and a rollback
// sends its commands in an order that always leaves the backend a server
// with weight.
func TestLBRefusalsAndRollbackOrder(t *testing.T) {
	stat := showStat(t)
	addr, _ := fakeHAProxy(t, func(cmd string) string {
		switch {
		case strings.HasPrefix(cmd, "show stat nosuch"):
			return "No such backend.\n"
		case strings.HasPrefix(cmd, "show stat"):
			return stat
		}
		return "Permission denied\n"
	})
	code, _, stderr := runCLI(t, "lb", "status", "--haproxy", addr, "--backend", "nosuch")
	if code != exitUsage || !strings.Contains(stderr, "no such backend") {
		t.Errorf("unknown backend: exit %d, %q; want 2", code, stderr)
	}
	code, _, stderr = runCLI(t, "lb", "rollback", "--haproxy", addr, "--backend", "app", "--stable", "blue", "--canary", "sick")
	if code != exitUnreachable || !strings.Contains(stderr, "(forbidden)") || !strings.Contains(stderr, "level admin") {
		t.Errorf("admin command refused: exit %d, %q; want 3, forbidden", code, stderr)
	}

	addr, cmds := fakeHAProxy(t, func(cmd string) string {
		if strings.HasPrefix(cmd, "show stat") {
			return stat
		}
		return "\n"
	})
	code, stdout, stderr := runCLI(t, "lb", "rollback", "--haproxy", addr, "--backend", "app", "--stable", "green", "--canary", "sick")
	var sets []string
	for len(cmds) > 0 {
		if c := <-cmds; strings.HasPrefix(c, "set ") {
			sets = append(sets, c)
		}
	}
	want := []string{"set server app/green weight 100", "set server app/green state ready", "set server app/sick weight 0", "set server app/sick state drain"}
	if code != 0 || fmt.Sprint(sets) != fmt.Sprint(want) {
		t.Errorf("rollback: exit %d, commands %q; want %q\n%s%s", code, sets, want, stdout, stderr)
	}
	// green shows MAINT in the stand-in's answer: a warning, still done.
	if !strings.Contains(stderr, "warning: green, which now has the new traffic, is MAINT") {
		t.Errorf("rollback to a server that is not up: no warning in %q", stderr)
	}
}

func TestLBCode(t *testing.T) {
	cases := []struct {
		err  error
		code string
	}{
		{haproxy.ErrInvalid, contract.CodeUsage},
		{haproxy.ErrNoServer, contract.CodeUsage},
		{haproxy.ErrNoCheck, contract.CodeUsage},
		{fmt.Errorf("%w: %w: x", haproxy.ErrSocket, haproxy.ErrPermission), contract.CodeForbidden},
		{haproxy.ErrSocket, contract.CodeUnreachable},
		{haproxy.ErrDrainTimeout, contract.CodeTimeout},
		{haproxy.ErrUnhealthy, contract.CodeFailed},
		{haproxy.ErrCommand, contract.CodeFailed},
		{fmt.Errorf("%w (%w)", haproxy.ErrSocket, context.Canceled), contract.CodeCanceled},
	}
	for _, c := range cases {
		if got := lbCode(c.err); got != c.code {
			t.Errorf("lbCode(%v) = %s, want %s", c.err, got, c.code)
		}
	}
}
