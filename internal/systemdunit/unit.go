// Package systemdunit writes the systemd unit of `baton service install` on
// Linux: a service whose main process is the `baton run` supervisor, which
// keeps one pid, owns the listening sockets, upgrades on `systemctl reload`
// and drains every generation on `systemctl stop`.
//
// Render turns a Spec into the unit text; Install writes it to
// /etc/systemd/system (atomically, refusing to replace a unit baton did not
// write) and reloads systemd; Uninstall stops, disables and removes it;
// Verify runs `systemd-analyze verify` on a unit text.
//
// Why the unit says what it says (each choice is also explained in the
// unit's own comments, for whoever reads it on the machine):
//
//   - Type=notify, not notify-reload. The supervisor itself sends READY=1
//     (first generation serving), RELOADING=1 with MONOTONIC_USEC and then
//     READY=1 around every upgrade, STOPPING=1, STATUS=. The reload is
//     ExecReload=baton upgrade, which waits for the outcome and exits
//     non-zero with the reason when the upgrade fails, so `systemctl
//     reload` reports it. A reload by signal cannot: the supervisor says
//     READY=1 after a failed upgrade too (the old generation serves on).
//     Under Type=notify-reload systemd sends the reload signal (SIGHUP) to
//     the main process *and* runs ExecReload (systemd's
//     service_enter_reload): two upgrades at once, one of them refused as
//     busy, so `systemctl reload` would fail for a successful upgrade. With
//     Type=notify only ExecReload runs; the RELOADING=1/READY=1 the
//     supervisor sends for upgrades started otherwise (SIGHUP, baton upgrade
//     from a shell, --watch-binary) still show as "reloading" in systemctl.
//     Type=notify also works with systemd < 253 (Debian 12 ships 252, where
//     notify-reload is an unknown type and the unit would run as simple).
//   - NotifyAccess=main: only the supervisor talks to systemd. Each
//     generation gets NOTIFY_SOCKET pointing at a socket of the supervisor
//     (supervisor/generation_unix.go drops the inherited one), so the apps'
//     READY=1 never reaches systemd; "all" would only let a stray process in
//     the cgroup fake the service's state.
//   - KillMode=mixed: SIGTERM goes to the supervisor alone, which drains the
//     generations itself (each gets --drain-signal, SIGKILL at
//     --drain-timeout); systemd's final SIGKILL goes to the whole cgroup.
//     TimeoutStopSec is the drain timeout plus a margin.
//   - RuntimeDirectory=baton with RuntimeDirectoryPreserve=yes: /run/baton
//     holds the control sockets (internal/ctl: root uses /run/baton) and the
//     generations' saved binaries of every baton service of the machine, so
//     systemd must not delete it when one of them stops or restarts.
package systemdunit

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
)

// Spec describes the service to install.
type Spec struct {
	// Name is the service name (baton's --name); the unit is
	// "<Name>.service".
	Name string
	// Description defaults to "baton: <Name>".
	Description string
	// ExecStart is the supervisor's argv: /abs/path/baton run --name N ...
	// -- /abs/app args. Its --drain-timeout, --ready-timeout, --probation
	// and --listen flags shape the unit's timeouts and capabilities.
	ExecStart []string
	// ExecReload is the argv of an upgrade: /abs/path/baton upgrade --name
	// N. Empty means ExecStart[0] upgrade --name Name.
	ExecReload []string
	// User and Group run the service; "" is root.
	User, Group string
	// WorkingDirectory, when set, is an absolute path.
	WorkingDirectory string
	// Environment holds KEY=VALUE pairs set for the service.
	Environment []string
}

// Marker is the comment line that identifies a unit written by this
// package: Install replaces and Uninstall removes only files that hold it.
const Marker = "# Written by baton service install; baton service uninstall removes it."

// RuntimeDir is where root's baton keeps its control sockets
// (internal/ctl.Dir); a service of another user gets RuntimeDir/<Name>.
const RuntimeDir = "/run/baton"

// Defaults of `baton run` (cmd/baton/run.go), for the timeouts when
// ExecStart does not set them.
const (
	defaultDrainTimeout = 30 * time.Second
	defaultReadyTimeout = 30 * time.Second
	stopMargin          = 15 * time.Second // reaping, removing files, the log's last lines
	reloadMargin        = 30 * time.Second // handover of state, the old generation's drain signal
	systemdStartTimeout = 90 * time.Second // systemd's DefaultTimeoutStartSec
)

var (
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// userRE: a user or group name as systemd accepts it in User= (or a
	// numeric id); no '%', so no specifier can hide in it.
	userRE = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_.-]*\$?|[0-9]+)$`)
)

// runFlags are the `baton run` flags that shape the unit.
type runFlags struct {
	name                  string
	drain, ready, probate time.Duration
	listens               []string
	app                   string // the argument after "--", "" if none
	config                bool   // --config: settings may come from a file
}

// Render returns the unit text for s, or an error when s is not valid: an
// empty or malformed name, an empty ExecStart, a relative or unclean path,
// a newline (or another control character, or invalid UTF-8) anywhere, a
// malformed Environment entry or user name, or `baton run` flags that do
// not parse (a --name other than Name, a bad duration).
func Render(s Spec) (string, error) {
	if err := ctl.CheckName(s.Name); err != nil {
		return "", fmt.Errorf("service name: %w", err)
	}
	if s.Description == "" {
		s.Description = "baton: " + s.Name
	}
	if len(s.ExecReload) == 0 && len(s.ExecStart) > 0 {
		s.ExecReload = []string{s.ExecStart[0], "upgrade", "--name", s.Name}
	}
	if err := checkText("Description", s.Description); err != nil {
		return "", err
	}
	if err := checkArgv("ExecStart", s.ExecStart); err != nil {
		return "", err
	}
	if err := checkArgv("ExecReload", s.ExecReload); err != nil {
		return "", err
	}
	root := s.User == "" || s.User == "root" || s.User == "0"
	for _, f := range []struct{ what, v string }{{"User", s.User}, {"Group", s.Group}} {
		if f.v != "" && !userRE.MatchString(f.v) {
			return "", fmt.Errorf("%s %q: not a user or group name", f.what, f.v)
		}
	}
	if s.WorkingDirectory != "" {
		if err := checkPath("WorkingDirectory", s.WorkingDirectory); err != nil {
			return "", err
		}
	}
	for _, kv := range s.Environment {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !envKeyRE.MatchString(k) {
			return "", fmt.Errorf("Environment %q: want KEY=VALUE with KEY of letters, digits and '_'", kv)
		}
		if err := checkText("Environment", kv); err != nil {
			return "", err
		}
	}
	rf, err := parseRun(s.ExecStart[1:])
	if err != nil {
		return "", fmt.Errorf("ExecStart: %w", err)
	}
	if rf.name != "" && rf.name != s.Name {
		return "", fmt.Errorf("ExecStart runs --name %q but the service is %q: ExecReload would not find it", rf.name, s.Name)
	}
	if rf.app != "" {
		if err := checkPath("ExecStart's app", rf.app); err != nil {
			return "", err
		}
	}
	if n, err := flagValue(s.ExecReload[1:], "name", "n"); err != nil {
		return "", fmt.Errorf("ExecReload: %w", err)
	} else if n != "" && n != s.Name {
		return "", fmt.Errorf("ExecReload upgrades --name %q but the service is %q", n, s.Name)
	}

	var b strings.Builder
	line := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	line("%s", Marker)
	line("# Change it with a drop-in (systemctl edit %s), which a reinstall keeps.", s.Name)
	line("[Unit]")
	line("Description=%s", escapeSpecifiers(s.Description))
	if needsOnline(rf.listens) {
		line("# A --listen address other than a wildcard or loopback: bind once it is configured.")
		line("Wants=network-online.target")
		line("After=network-online.target")
	} else {
		line("After=network.target")
	}
	line("")
	line("[Service]")
	line("# The supervisor (the main process) says READY=1 when the first generation")
	line("# serves, RELOADING=1 and READY=1 around every upgrade, STOPPING=1 on stop.")
	line("# The generations' READY=1 goes to the supervisor's own socket, not here:")
	line("# only the main process talks to systemd.")
	line("Type=notify")
	line("NotifyAccess=main")
	line("ExecStart=%s", quoteArgv(s.ExecStart))
	line("# systemctl reload = baton upgrade: it waits for the new generation and")
	line("# fails with the reason when the upgrade fails (the old one keeps serving).")
	line("# Not Type=notify-reload: systemd would also send SIGHUP, a second upgrade.")
	line("ExecReload=%s", quoteArgv(s.ExecReload))
	reload := rf.ready + rf.probate + reloadMargin
	line("# Start and reload: a generation's --ready-timeout (+ --probation) and a margin.")
	line("TimeoutStartSec=%s", seconds(max(reload, systemdStartTimeout)))
	line("# Stop: SIGTERM to the supervisor only; it drains every generation and kills")
	line("# what is left at --drain-timeout (%s); SIGKILL for all after TimeoutStopSec.", rf.drain)
	if rf.config {
		line("# (--config: a drain-timeout set in the file is not seen here.)")
	}
	line("KillMode=mixed")
	line("TimeoutStopSec=%s", seconds(rf.drain+stopMargin))
	line("Restart=on-failure")
	line("RestartSec=1s")
	if s.User != "" {
		line("User=%s", s.User)
	}
	if s.Group != "" {
		line("Group=%s", s.Group)
	}
	if s.WorkingDirectory != "" {
		line("WorkingDirectory=%s", escapeSpecifiers(s.WorkingDirectory))
	}
	runDir, runDirRel := RuntimeDir, "baton"
	if root {
		line("# The control socket and the generations' saved binaries: /run/baton is")
		line("# shared by every baton of root (services, baton run by hand), so it must")
		line("# outlive this service's stops and restarts.")
	} else {
		runDir, runDirRel = RuntimeDir+"/"+s.Name, "baton/"+s.Name
		line("# The control socket and the generations' saved binaries, in a directory")
		line("# of %s's own (root's baton services share /run/baton); from a shell:", s.User)
		line("# BATON_RUNTIME_DIR=%s baton status --name %s", runDir, s.Name)
	}
	line("RuntimeDirectory=%s", runDirRel)
	line("RuntimeDirectoryPreserve=yes")
	line("Environment=%s", quoteEnv(contract.EnvRuntimeDir+"="+runDir))
	for _, kv := range s.Environment {
		line("Environment=%s", quoteEnv(kv))
	}
	if !root && lowPort(rf.listens) {
		line("# A --listen port below 1024, bound by the supervisor as %s.", s.User)
		line("AmbientCapabilities=CAP_NET_BIND_SERVICE")
	}
	line("# Hardening that leaves a network service working: the app may write")
	line("# anywhere but /usr, /boot, /efi and /etc, and read (and run) from /home.")
	line("NoNewPrivileges=yes")
	line("PrivateTmp=yes")
	line("ProtectSystem=full")
	line("ProtectHome=read-only")
	if s.WorkingDirectory != "" && underAny(s.WorkingDirectory, "/home", "/root", "/run/user") {
		line("ReadWritePaths=%s", quotePath(s.WorkingDirectory))
	}
	line("ProtectKernelTunables=yes")
	line("ProtectKernelModules=yes")
	line("ProtectControlGroups=yes")
	line("RestrictSUIDSGID=yes")
	line("LockPersonality=yes")
	if rf.app != "" && underAny(rf.app, "/usr", "/etc", "/boot", "/efi", "/home", "/root") {
		line("# The app is on a read-only tree here: if baton manages its releases")
		line("# (baton install), a failed upgrade cannot put the serving release back")
		line("# at %s; allow it in a drop-in with ReadWritePaths=%s", escapeSpecifiers(rf.app), quotePath(path.Dir(rf.app)))
	}
	line("")
	line("[Install]")
	line("WantedBy=multi-user.target")
	return b.String(), nil
}

// checkText refuses what cannot stand in one line of a unit: control
// characters (a newline would start a new setting) and invalid UTF-8
// (systemd ignores such an assignment).
func checkText(what, v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%s %q: not valid UTF-8", what, v)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s %q: control character %U (a newline, say) cannot be in a unit", what, v, r)
		}
	}
	return nil
}

// checkPath wants an absolute, clean path (systemd refuses others).
func checkPath(what, p string) error {
	if err := checkText(what, p); err != nil {
		return err
	}
	if !path.IsAbs(p) {
		return fmt.Errorf("%s %q: not an absolute path", what, p)
	}
	if path.Clean(p) != p {
		return fmt.Errorf("%s %q: not a clean path (want %q)", what, p, path.Clean(p))
	}
	if strings.TrimSpace(p) != p {
		return fmt.Errorf("%s %q: space at an end", what, p)
	}
	return nil
}

func checkArgv(what string, argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("%s: empty", what)
	}
	if err := checkPath(what+"'s program", argv[0]); err != nil {
		return err
	}
	for _, a := range argv[1:] {
		if err := checkText(what+" argument", a); err != nil {
			return err
		}
	}
	return nil
}

// parseRun reads the `baton run` flags that matter here, up to "--".
func parseRun(args []string) (runFlags, error) {
	rf := runFlags{drain: defaultDrainTimeout, ready: defaultReadyTimeout}
	var err error
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 < len(args) {
				rf.app = args[i+1]
			}
			break
		}
		name, val, has := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || a == "-" {
			continue
		}
		switch name {
		case "name", "n", "drain-timeout", "ready-timeout", "probation", "listen", "config":
		default:
			continue
		}
		if !has {
			if i+1 >= len(args) {
				return rf, fmt.Errorf("%s without a value", a)
			}
			i++
			val = args[i]
		}
		switch name {
		case "name", "n":
			rf.name = val
		case "listen":
			rf.listens = append(rf.listens, val)
		case "config":
			rf.config = true
		case "drain-timeout":
			rf.drain, err = parseDuration(name, val)
		case "ready-timeout":
			rf.ready, err = parseDuration(name, val)
		case "probation":
			rf.probate, err = parseDuration(name, val)
		}
		if err != nil {
			return rf, err
		}
	}
	return rf, nil
}

func parseDuration(name, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("--%s %q: not a duration like 30s", name, v)
	}
	return d, nil
}

// flagValue returns the value of --long or -short in args (up to "--").
func flagValue(args []string, long, short string) (string, error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		for _, p := range []string{"--" + long, "-" + short} {
			if a == p {
				if i+1 >= len(args) {
					return "", fmt.Errorf("%s without a value", a)
				}
				return args[i+1], nil
			}
			if v, ok := strings.CutPrefix(a, p+"="); ok {
				return v, nil
			}
		}
	}
	return "", nil
}

// listenHostPort splits a --listen URL of a network socket; ok is false for
// unix sockets and URLs that do not parse (baton run reports those).
func listenHostPort(l string) (host string, port int, ok bool) {
	l, _, _ = strings.Cut(l, "#")
	u, err := url.Parse(l)
	if err != nil || !strings.HasPrefix(u.Scheme, "tcp") && !strings.HasPrefix(u.Scheme, "udp") {
		return "", 0, false
	}
	port, err = strconv.Atoi(u.Port())
	if err != nil {
		return "", 0, false
	}
	return u.Hostname(), port, true
}

// lowPort reports whether a --listen port needs CAP_NET_BIND_SERVICE.
func lowPort(listens []string) bool {
	for _, l := range listens {
		if _, port, ok := listenHostPort(l); ok && port > 0 && port < 1024 {
			return true
		}
	}
	return false
}

// needsOnline reports whether a --listen host is an address that exists
// only once the network is configured (not a wildcard, not loopback).
func needsOnline(listens []string) bool {
	for _, l := range listens {
		host, _, ok := listenHostPort(l)
		if !ok || host == "" || host == "localhost" {
			continue
		}
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsUnspecified() && !ip.IsLoopback() {
			return true
		}
	}
	return false
}

func underAny(p string, dirs ...string) bool {
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

func seconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10) + "s"
}

// escapeSpecifiers doubles '%', which systemd expands as a specifier (%n,
// %i...) in most settings.
func escapeSpecifiers(s string) string { return strings.ReplaceAll(s, "%", "%%") }

// quoteArgv writes a command line for ExecStart=/ExecReload= that systemd
// splits back into exactly argv (systemd.service(5), "Command lines").
func quoteArgv(argv []string) string {
	words := make([]string, len(argv))
	for i, a := range argv {
		words[i] = quoteArg(a)
	}
	return strings.Join(words, " ")
}

// plainRE: what stays unquoted. Everything else is double-quoted, which
// also keeps a lone ";" (a command separator) and "" (an empty argument).
var plainRE = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./$-]+$`)

// quoteArg quotes one argument: '%' becomes "%%" (specifiers) and '$'
// becomes "$$" (systemd substitutes $VAR and ${VAR} in command lines,
// quoted or not); in double quotes, '\' and '"' are backslash-escaped
// (systemd applies C unescaping there).
func quoteArg(a string) string {
	a = strings.ReplaceAll(escapeSpecifiers(a), "$", "$$")
	if plainRE.MatchString(a) {
		return a
	}
	return quoteWord(a)
}

// quoteWord double-quotes w with '\' and '"' escaped; '%' and '$' are left
// to the caller.
func quoteWord(w string) string {
	w = strings.ReplaceAll(w, `\`, `\\`)
	w = strings.ReplaceAll(w, `"`, `\"`)
	return `"` + w + `"`
}

// quotePath writes a path for a list setting (ReadWritePaths=), quoted
// unless it is plain.
func quotePath(p string) string { return quoteEnv(p) }

// quoteEnv writes one Environment= assignment, with specifiers escaped
// ('$' is not expanded in Environment=), quoted unless it is plain.
func quoteEnv(kv string) string {
	kv = escapeSpecifiers(kv)
	if plainRE.MatchString(kv) {
		return kv
	}
	return quoteWord(kv)
}

// UnitPath returns where the unit of the service name lives: Dir/<name>.service.
func UnitPath(name string) string { return filepath.Join(Dir, name+".service") }
