package main

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/baton-go/baton/internal/contract"
)

// The install's plan: baton run's flags as given, the hidden --as-service,
// the default log file, the app after --; --dry-run changes nothing.
func TestServiceInstallDryRun(t *testing.T) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"service", "install", "--name", "hello", "--listen", "tcp://127.0.0.1:8080", "--listen", "tcp://127.0.0.1:8081",
		"--drain-timeout", "20s", "--dry-run", "--", "/bin/sh", "-c", "true"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	// The app is made absolute (Windows: Z:\bin\sh under Wine).
	want := []string{"--listen=tcp://127.0.0.1:8080 --listen=tcp://127.0.0.1:8081", "--drain-timeout=20s", "sh -c true"}
	switch runtime.GOOS {
	case "linux":
		want = append(want, "ExecStart=", " run --name=hello ", "-- /bin/sh -c true", "ExecReload=", "upgrade --name hello")
	case "windows":
		want = append(want, " run --as-service --name=hello ", `\baton\hello\hello.log`)
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("dry run lacks %q:\n%s", w, got)
		}
	}
}

func TestServicePlan(t *testing.T) {
	si := &serviceInstall{start: "delayed"}
	si.run.cfg.Name = "web"
	p, err := si.plan(`C:\baton\baton.exe`, []string{"--listen=tcp://127.0.0.1:80"}, []string{`C:\Program Files\web\web.exe`, "-x"}, `C:\ProgramData\baton\web\web.log`)
	if err != nil {
		t.Fatal(err)
	}
	s := p.String()
	for _, w := range []string{`C:\baton\baton.exe run --as-service --name=web --listen=tcp://127.0.0.1:80 --log-file=C:\ProgramData\baton\web\web.log -- "C:\Program Files\web\web.exe" -x`,
		"start        delayed", "account      LocalSystem", `C:\ProgramData\baton\web\web.supervisor.log`, "restart after 5s"} {
		if !strings.Contains(s, w) {
			t.Errorf("plan lacks %q:\n%s", w, s)
		}
	}
	si.start = "sometimes"
	if _, err := si.plan("b", nil, []string{"a"}, ""); err == nil {
		t.Error("--start sometimes accepted")
	}
	for _, bad := range []string{"", "a b", "../x", "-x"} {
		if checkServiceName(bad) == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	if got := windowsCommandLine([]string{`a"b`, `c d\`, ""}); got != `"a\"b" "c d\\" ""` {
		t.Errorf("quoting: %s", got)
	}
}

// The flags the Windows service does not serve are refused by name, as a
// usage error; the others pass.
func TestRefuseFlags(t *testing.T) {
	c := newServiceInstallCmd()
	if err := c.ParseFlags([]string{"--name", "web", "--listen", "tcp://127.0.0.1:8080", "--drain-timeout", "20s"}); err != nil {
		t.Fatal(err)
	}
	if err := refuseFlags(c.Flags(), windowsServiceUnserved, "why"); err != nil {
		t.Errorf("no unserved flag given: %v", err)
	}
	c = newServiceInstallCmd()
	if err := c.ParseFlags([]string{"--name", "web", "--metrics", "127.0.0.1:9464", "--http-control", "127.0.0.1:9465",
		"--http-control-token-file", "tok", "--listen", "tcp://127.0.0.1:8080"}); err != nil {
		t.Fatal(err)
	}
	err := refuseFlags(c.Flags(), windowsServiceUnserved, "not served")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != contract.CodeUsage ||
		err.Error() != "--metrics, --http-control, --http-control-token-file: not served" {
		t.Errorf("refusal: %v", err)
	}
	for _, n := range windowsServiceUnserved {
		if c.Flags().Lookup(n) == nil {
			t.Errorf("--%s is not a flag of service install: the check would never see it", n)
		}
	}
}
