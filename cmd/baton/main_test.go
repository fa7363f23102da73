package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/testenv"
)

// The test binary doubles as the CLI so that exit codes are checked for
// real, through a process exit.
func TestMain(m *testing.M) {
	if os.Getenv("BATON_CLI_UNDER_TEST") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	dir, err := os.MkdirTemp("", "bcli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd.Env = append(os.Environ(), "BATON_CLI_UNDER_TEST=1", "BATON_RUNTIME_DIR="+dir)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), o.String(), e.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, o.String(), e.String()
}

func TestExitCodesAndMessages(t *testing.T) {
	cases := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"upgrade"}, exitUsage, `required flag(s) "name" not set`},
		{[]string{"upgrade", "--name", "x", "--bogus"}, exitUsage, "unknown flag: --bogus"},
		{[]string{"upgrade", "--name", "../etc"}, exitUsage, "invalid control endpoint name"},
		{[]string{"upgrade", "--name", "nosuchservice"}, exitUnreachable, `no baton service listens under that name: "nosuchservice"`},
		{[]string{"status", "--name", "nosuchservice", "--json"}, exitUnreachable, "no baton service"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"upgrade", "--name", "x", "extra"}, exitUsage, "unknown command"},
		{[]string{"run", "--name", "x", "--listen", "tcp://127.0.0.1:0", "--max-draining", "0", "--", "true"}, exitUsage, "--max-draining 0: at least 1"},
		{[]string{"run", "--name", "x", "--listen", "tcp://127.0.0.1:0", "--max-restarts", "-2", "--", "true"}, exitUsage, "--max-restarts -2"},
	}
	for _, c := range cases {
		code, _, stderr := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.contains) {
			t.Errorf("baton %s: exit %d, stderr %q; want exit %d and %q", strings.Join(c.args, " "), code, stderr, c.code, c.contains)
		}
	}
}

func TestJSONEvenWhenUnreachable(t *testing.T) {
	code, stdout, _ := runCLI(t, "upgrade", "--name", "nosuchservice", "--json")
	if code != exitUnreachable || !strings.Contains(stdout, `"code": "unreachable"`) || !strings.Contains(stdout, `"ok": false`) {
		t.Fatalf("exit %d, stdout %q: want exit 3 and a JSON report", code, stdout)
	}
}

func TestHelpDocumentsExitCodes(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"upgrade", "--help"}, {"status", "--help"}} {
		code, stdout, _ := runCLI(t, args...)
		if code != 0 || !strings.Contains(stdout, "Exit codes:") || !strings.Contains(stdout, "4  busy") {
			t.Errorf("baton %v: exit %d, help without the exit codes:\n%s", args, code, stdout)
		}
	}
}

// A config file with an unknown key, a bad value or broken syntax is
// refused, naming the line; nothing is started.
func TestRunConfigFileRefusals(t *testing.T) {
	dir := testenv.TempDir(t)
	cases := []struct{ name, text, want string }{
		{"unknown.toml", "name = \"x\"\nlisten = [\"tcp://127.0.0.1:1\"]\ndrain-timeuot = \"1s\"\n", `unknown.toml:3: unknown key "drain-timeuot"`},
		{"badvalue.toml", "name = \"x\"\n\nmax-draining = \"many\"\n", "badvalue.toml:3: bad value for max-draining"},
		{"badlist.toml", "name = [\"x\"]\n", "badlist.toml:1: bad value for name: a list is only allowed for repeatable flags"},
		{"syntax.toml", "name = \"x\"\nlisten = [tcp\n", "syntax.toml:2:"},
		{"nocommand.toml", "name = \"x\"\nlisten = [\"tcp://127.0.0.1:1\"]\n", "no app to run"},
	}
	for _, c := range cases {
		path := dir + "/" + c.name
		if err := os.WriteFile(path, []byte(c.text), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := runCLI(t, "run", "--config", path)
		if code != exitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 and %q", c.name, code, stderr, c.want)
		}
	}
}

// A readiness option on the command line replaces the file's (one choice).
func TestRunConfigReadinessOverride(t *testing.T) {
	path := testenv.TempDir(t) + "/ready.toml"
	os.WriteFile(path, []byte("name = \"x\"\nlisten = [\"tcp://127.0.0.1:1\"]\nready-http = \"http://127.0.0.1:1/healthz\"\n"), 0o644)
	code, _, stderr := runCLI(t, "run", "--config", path, "--ready-delay", "1s")
	if code != exitUsage || strings.Contains(stderr, "choose one") || !strings.Contains(stderr, "no app to run") {
		t.Fatalf("exit %d, stderr %q: the command-line readiness should win over the file's", code, stderr)
	}
}

// With --json a report is printed on stdout whatever happened, also when
// the upgrade is refused before any check ran.
func TestUpgradeJSONOnEarlyRefusal(t *testing.T) {
	code, stdout, _ := runCLI(t, "upgrade", "--name", "x", "--binary", "/nonexistent/app", "--json")
	if code != exitUsage || !strings.Contains(stdout, `"ok": false`) || !strings.Contains(stdout, "/nonexistent/app") {
		t.Fatalf("exit %d, stdout:\n%s", code, stdout)
	}
}

func TestTransportErrorOutOfDescriptors(t *testing.T) {
	err := transportError(fmt.Errorf("dial unix /run/baton/x.sock: %w", syscall.EMFILE))
	if err.code != contract.CodeResources || contract.ExitCode(err.code) != contract.ExitFailed || !strings.Contains(err.Error(), "raise the limit") {
		t.Fatalf("EMFILE in the CLI: code %s, %v", err.code, err)
	}
}
