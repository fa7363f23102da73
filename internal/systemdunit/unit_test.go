//go:build unix

package systemdunit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-go/baton/internal/testenv"
)

const baton = "/usr/local/bin/baton"

func helloSpec() Spec {
	return Spec{
		Name:       "hello",
		ExecStart:  []string{baton, "run", "--name", "hello", "--listen", "tcp://127.0.0.1:8080", "--", "/srv/hello/hello", "-addr", "127.0.0.1:8080"},
		ExecReload: []string{baton, "upgrade", "--name", "hello"},
	}
}

func render(t *testing.T, s Spec) string {
	t.Helper()
	text, err := Render(s)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	return text
}

// settings returns the unit's lines that are not comments or blank.
func settings(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func hasLine(t *testing.T, text, line string) {
	t.Helper()
	for _, l := range strings.Split(text, "\n") {
		if l == line {
			return
		}
	}
	t.Errorf("no line %q in the unit:\n%s", line, text)
}

func noLinePrefix(t *testing.T, text, prefix string) {
	t.Helper()
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			t.Errorf("unexpected line %q in the unit:\n%s", l, text)
		}
	}
}

func TestRenderHello(t *testing.T) {
	text := render(t, helloSpec())
	if first, _, _ := strings.Cut(text, "\n"); first != Marker {
		t.Errorf("first line %q, want the marker %q", first, Marker)
	}
	want := []string{
		"[Unit]",
		"Description=baton: hello",
		"After=network.target",
		"[Service]",
		"Type=notify",
		"NotifyAccess=main",
		"ExecStart=/usr/local/bin/baton run --name hello --listen tcp://127.0.0.1:8080 -- /srv/hello/hello -addr 127.0.0.1:8080",
		"ExecReload=/usr/local/bin/baton upgrade --name hello",
		"TimeoutStartSec=90s",
		"KillMode=mixed",
		"TimeoutStopSec=45s", // the default drain timeout, 30s, and 15s
		"Restart=on-failure",
		"RestartSec=1s",
		"RuntimeDirectory=baton",
		"RuntimeDirectoryPreserve=yes",
		"Environment=BATON_RUNTIME_DIR=/run/baton",
		"NoNewPrivileges=yes",
		"PrivateTmp=yes",
		"ProtectSystem=full",
		"ProtectHome=read-only",
		"ProtectKernelTunables=yes",
		"ProtectKernelModules=yes",
		"ProtectControlGroups=yes",
		"RestrictSUIDSGID=yes",
		"LockPersonality=yes",
		"[Install]",
		"WantedBy=multi-user.target",
	}
	if got := settings(text); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("settings:\n%s\n\nwant:\n%s\n\nunit:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), text)
	}
}

func TestRenderDefaultsExecReload(t *testing.T) {
	s := helloSpec()
	s.ExecReload = nil
	hasLine(t, render(t, s), "ExecReload=/usr/local/bin/baton upgrade --name hello")
}

func TestRenderTimeouts(t *testing.T) {
	for _, tc := range []struct {
		flags       []string
		start, stop string
	}{
		{[]string{"--drain-timeout", "60s"}, "90s", "75s"},
		{[]string{"--drain-timeout=2m"}, "90s", "135s"},
		{[]string{"--ready-timeout", "1m", "--probation=2m"}, "210s", "45s"},
		{[]string{"--drain-timeout", "1.5s"}, "90s", "17s"},
	} {
		s := helloSpec()
		s.ExecStart = append([]string{baton, "run", "--name", "hello"}, append(tc.flags, "--", "/srv/hello/hello")...)
		text := render(t, s)
		hasLine(t, text, "TimeoutStartSec="+tc.start)
		hasLine(t, text, "TimeoutStopSec="+tc.stop)
	}
}

func TestRenderUserAndNetwork(t *testing.T) {
	s := helloSpec()
	s.User, s.Group = "web", "web"
	s.WorkingDirectory = "/home/web/hello"
	s.Environment = []string{"GOMAXPROCS=2", "GREETING=hello world"}
	s.ExecStart = []string{baton, "run", "-n", "hello", "--listen", "tcp://192.0.2.10:80#http", "--listen=unix:///run/hello.sock", "--", "/home/web/hello/hello"}
	text := render(t, s)
	for _, l := range []string{
		"User=web",
		"Group=web",
		"WorkingDirectory=/home/web/hello",
		"ReadWritePaths=/home/web/hello",
		"Wants=network-online.target",
		"After=network-online.target",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE",
		"RuntimeDirectory=baton/hello",
		"Environment=BATON_RUNTIME_DIR=/run/baton/hello",
		"Environment=GOMAXPROCS=2",
		"Environment=\"GREETING=hello world\"",
	} {
		hasLine(t, text, l)
	}
	noLinePrefix(t, text, "After=network.target")
	if !strings.Contains(text, "# at /home/web/hello/hello; allow it in a drop-in with ReadWritePaths=/home/web/hello") {
		t.Errorf("no note about the read-only app directory:\n%s", text)
	}

	// Root on a high port and a wildcard address: no capability, no wait
	// for the network.
	s = helloSpec()
	s.ExecStart = []string{baton, "run", "--name", "hello", "--listen", "tcp://:8080", "--listen", "tcp6://[::1]:8081", "--", "/srv/hello/hello"}
	text = render(t, s)
	noLinePrefix(t, text, "AmbientCapabilities=")
	noLinePrefix(t, text, "Wants=")
	noLinePrefix(t, text, "User=")
	noLinePrefix(t, text, "ReadWritePaths=")
}

func TestQuoteArg(t *testing.T) {
	for in, want := range map[string]string{
		"plain":           "plain",
		"127.0.0.1:8080":  "127.0.0.1:8080",
		"-flag=v,w":       "-flag=v,w",
		"a b":             `"a b"`,
		"":                `""`,
		";":               `";"`,
		"100%":            "100%%",
		"%n":              "%%n",
		"$HOME":           "$$HOME",
		"${HOME}":         `"$${HOME}"`,
		`say "hi"`:        `"say \"hi\""`,
		"it's":            `"it's"`,
		`back\slash`:      `"back\\slash"`,
		"50% of $X and y": `"50%% of $$X and y"`,
		"héllo":           `"héllo"`,
		"\ttab":           "\"\ttab\"", // refused by Render; quoteArg alone keeps it
	} {
		if got := quoteArg(in); got != want {
			t.Errorf("quoteArg(%q) = %s, want %s", in, got, want)
		}
	}
	// In a unit, the tricky arguments of the app and the environment.
	s := helloSpec()
	s.ExecStart = []string{baton, "run", "--name", "hello", "--", "/srv/hello/hello", "-name", "", "-greeting", `100% "sure" $USER`}
	s.Environment = []string{`MOTD=50% off, $5 \o/`}
	s.Description = "hello, 100% up"
	text := render(t, s)
	hasLine(t, text, `ExecStart=/usr/local/bin/baton run --name hello -- /srv/hello/hello -name "" -greeting "100%% \"sure\" $$USER"`)
	hasLine(t, text, `Environment="MOTD=50%% off, $5 \\o/"`)
	hasLine(t, text, "Description=hello, 100%% up")
}

func TestRenderRefusesInvalid(t *testing.T) {
	for what, mod := range map[string]func(*Spec){
		"empty name":                 func(s *Spec) { s.Name = "" },
		"name with a slash":          func(s *Spec) { s.Name = "../hello" },
		"name with a space":          func(s *Spec) { s.Name = "hel lo" },
		"no ExecStart":               func(s *Spec) { s.ExecStart = nil },
		"relative baton":             func(s *Spec) { s.ExecStart[0] = "baton" },
		"unclean path":               func(s *Spec) { s.ExecStart[0] = "/usr/local/bin/../bin/baton" },
		"relative ExecReload":        func(s *Spec) { s.ExecReload[0] = "./baton" },
		"relative app":               func(s *Spec) { s.ExecStart[7] = "./hello" },
		"newline in an argument":     func(s *Spec) { s.ExecStart[9] = "127.0.0.1:8080\nExecStartPre=/bin/sh" },
		"newline in the description": func(s *Spec) { s.Description = "hello\n[Service]" },
		"carriage return in env":     func(s *Spec) { s.Environment = []string{"A=b\rc"} },
		"NUL in an argument":         func(s *Spec) { s.ExecReload[3] = "hel\x00lo" },
		"tab in an argument":         func(s *Spec) { s.ExecStart[9] = "a\tb" },
		"invalid UTF-8":              func(s *Spec) { s.Description = "caf\xe9" },
		"env without =":              func(s *Spec) { s.Environment = []string{"JUSTAKEY"} },
		"env with a bad key":         func(s *Spec) { s.Environment = []string{"A-B=c"} },
		"relative working dir":       func(s *Spec) { s.WorkingDirectory = "srv/hello" },
		"specifier in User":          func(s *Spec) { s.User = "%u" },
		"space in Group":             func(s *Spec) { s.Group = "we b" },
		"another --name":             func(s *Spec) { s.ExecStart[3] = "other" },
		"ExecReload of another name": func(s *Spec) { s.ExecReload[3] = "other" },
		"bad --drain-timeout": func(s *Spec) {
			s.ExecStart = []string{baton, "run", "--drain-timeout", "soon", "--", "/srv/hello/hello"}
		},
		"--listen without a value": func(s *Spec) { s.ExecStart = []string{baton, "run", "--listen"} },
	} {
		s := helloSpec()
		mod(&s)
		if text, err := Render(s); err == nil {
			t.Errorf("%s: Render accepted it:\n%s", what, text)
		}
	}
}

// fakeSystem points the package at a temporary Dir, makes systemd look
// running or not, and records the systemctl calls (failing those in fail).
func fakeSystem(t *testing.T, running bool, fail ...string) *[]string {
	t.Helper()
	oldDir, oldBooted, oldCtl := Dir, BootedPath, Systemctl
	t.Cleanup(func() { Dir, BootedPath, Systemctl = oldDir, oldBooted, oldCtl })
	Dir = t.TempDir()
	BootedPath = filepath.Join(t.TempDir(), "systemd-system")
	if running {
		if err := os.Mkdir(BootedPath, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	calls := new([]string)
	Systemctl = func(_ context.Context, _ io.Writer, args ...string) error {
		if !running {
			t.Errorf("systemctl %v called while systemd is not running", args)
		}
		c := strings.Join(args, " ")
		*calls = append(*calls, c)
		for _, f := range fail {
			if f == c {
				return errors.New("exit status 1")
			}
		}
		return nil
	}
	return calls
}

func TestInstallUninstallWithoutSystemd(t *testing.T) {
	fakeSystem(t, false)
	ctx := context.Background()
	var out bytes.Buffer
	if err := Install(ctx, helloSpec(), &out); err != nil {
		t.Fatal(err)
	}
	p := UnitPath("hello")
	if p != filepath.Join(Dir, "hello.service") {
		t.Errorf("UnitPath = %s", p)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := render(t, helloSpec()); string(data) != want {
		t.Errorf("installed unit differs from Render:\n%s", data)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	if !strings.Contains(out.String(), "wrote "+p) || !strings.Contains(out.String(), "did not run systemctl daemon-reload") {
		t.Errorf("output: %q", out.String())
	}
	if ents, _ := os.ReadDir(Dir); len(ents) != 1 {
		t.Errorf("Dir holds %d entries, want the unit alone (no temporary file left)", len(ents))
	}

	// Again, unchanged: up to date. Changed: replaced (it is ours).
	out.Reset()
	if err := Install(ctx, helloSpec(), &out); err != nil || !strings.Contains(out.String(), "up to date") {
		t.Errorf("second Install: %v, %q", err, out.String())
	}
	s := helloSpec()
	s.Description = "hello, replaced"
	if err := Install(ctx, s, io.Discard); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(p); !strings.Contains(string(data), "Description=hello, replaced") {
		t.Errorf("unit not replaced:\n%s", data)
	}

	// Enabled by hand (as systemctl enable would): uninstalling offline
	// leaves no dangling link.
	wants := filepath.Join(Dir, "multi-user.target.wants")
	if err := os.Mkdir(wants, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(wants, "hello.service")
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := Uninstall(ctx, "hello", &out); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{p, link} {
		if _, err := os.Lstat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there after Uninstall: %v", f, err)
		}
	}
	if !strings.Contains(out.String(), "did not stop or disable hello.service") {
		t.Errorf("output: %q", out.String())
	}
	if err := Uninstall(ctx, "hello", io.Discard); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Uninstall of a missing unit: %v, want fs.ErrNotExist", err)
	}
}

func TestInstallUninstallWithSystemd(t *testing.T) {
	calls := fakeSystem(t, true)
	ctx := context.Background()
	if err := Install(ctx, helloSpec(), io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := Uninstall(ctx, "hello", io.Discard); err != nil {
		t.Fatal(err)
	}
	want := "daemon-reload|stop hello.service|disable hello.service|daemon-reload"
	if got := strings.Join(*calls, "|"); got != want {
		t.Errorf("systemctl calls %s, want %s", got, want)
	}
	if _, err := os.Stat(UnitPath("hello")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unit still there: %v", err)
	}
}

func TestUninstallKeepsTheUnitWhenStopFails(t *testing.T) {
	fakeSystem(t, true, "stop hello.service")
	ctx := context.Background()
	if err := Install(ctx, helloSpec(), io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := Uninstall(ctx, "hello", io.Discard); err == nil {
		t.Fatal("Uninstall succeeded although systemctl stop failed")
	}
	if _, err := os.Stat(UnitPath("hello")); err != nil {
		t.Errorf("unit removed although the service may still run: %v", err)
	}
}

func TestForeignUnitIsLeftAlone(t *testing.T) {
	calls := fakeSystem(t, true)
	ctx := context.Background()
	p := UnitPath("hello")
	foreign := "[Service]\nExecStart=/usr/bin/hello\n"
	if err := os.WriteFile(p, []byte(foreign), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Install(ctx, helloSpec(), io.Discard); !errors.Is(err, ErrNotOurs) {
		t.Errorf("Install over a foreign unit: %v, want ErrNotOurs", err)
	}
	if err := Uninstall(ctx, "hello", io.Discard); !errors.Is(err, ErrNotOurs) {
		t.Errorf("Uninstall of a foreign unit: %v, want ErrNotOurs", err)
	}
	if data, _ := os.ReadFile(p); string(data) != foreign {
		t.Errorf("foreign unit changed:\n%s", data)
	}
	if len(*calls) != 0 {
		t.Errorf("systemctl called for a foreign unit: %v", *calls)
	}
	// A masked unit (a link to /dev/null) is not ours either.
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(os.DevNull, p); err != nil {
		t.Fatal(err)
	}
	if err := Install(ctx, helloSpec(), io.Discard); !errors.Is(err, ErrNotOurs) {
		t.Errorf("Install over a masked unit: %v, want ErrNotOurs", err)
	}
}

func TestVerifyWithoutTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if err := Verify(context.Background(), render(t, helloSpec())); !errors.Is(err, ErrNoVerifier) {
		t.Errorf("Verify without systemd-analyze: %v, want ErrNoVerifier", err)
	}
}

// needVerifier makes sure systemd-analyze is there (installing the systemd
// package when it can): without it the test is skipped, saying why, and
// fails under CI=true.
func needVerifier(t *testing.T) {
	t.Helper()
	p := testenv.Command(t, "systemd-analyze", "systemd")
	t.Setenv("PATH", filepath.Dir(p)+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func TestVerify(t *testing.T) {
	needVerifier(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := Spec{
		Name:        "hello",
		ExecStart:   []string{exe, "run", "--name", "hello", "--listen", "tcp://127.0.0.1:8080", "--drain-timeout", "45s", "--", exe, "-name", "", "-greeting", `100% "sure" $USER`},
		ExecReload:  []string{exe, "upgrade", "--name", "hello"},
		Environment: []string{"GREETING=hello world", `MOTD=50% off \o/`},
	}
	if err := Verify(ctx, render(t, s)); err != nil {
		t.Errorf("the rendered unit does not verify: %v", err)
	}
	// What systemd-analyze must catch: a missing program (an error) and an
	// unknown setting (only a warning to systemd).
	missing := s
	missing.ExecReload = []string{"/nonexistent/baton", "upgrade", "--name", "hello"}
	if err := Verify(ctx, render(t, missing)); err == nil || errors.Is(err, ErrNoVerifier) {
		t.Errorf("Verify of a unit whose ExecReload does not exist: %v", err)
	}
	bogus := strings.Replace(render(t, s), "[Service]\n", "[Service]\nNoSuchSetting=yes\n", 1)
	if err := Verify(ctx, bogus); err == nil || !strings.Contains(err.Error(), "NoSuchSetting") {
		t.Errorf("Verify of a unit with an unknown setting: %v", err)
	}
}
