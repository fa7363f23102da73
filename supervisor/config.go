// Package supervisor is `baton run`: a small process with a stable pid that
// owns the listening sockets and runs generations of an app as children,
// handing them the sockets by systemd's socket-activation protocol
// (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID). An upgrade starts a new
// generation on the same sockets, waits until it is ready, then tells the
// old one to drain (a signal) and reaps it. A generation that dies outside
// an upgrade is restarted with back-off while the sockets stay open, so
// clients wait in the accept queue instead of being refused.
package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ListenSpec is one socket the supervisor owns, from a URL such as
// tcp://127.0.0.1:8080, unix:///run/app.sock or udp://:5353.
type ListenSpec struct {
	Network string // tcp, tcp4, tcp6, unix, udp, udp4, udp6, unixgram
	Addr    string
	Name    string // LISTEN_FDNAMES entry (defaults to network_port or the socket file's base name)
}

// ParseListen parses a --listen value. An optional #name fragment names
// the socket in LISTEN_FDNAMES.
func ParseListen(s string) (ListenSpec, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return ListenSpec{}, fmt.Errorf("--listen %q: want SCHEME://ADDRESS, e.g. tcp://127.0.0.1:8080, unix:///run/app.sock, udp://:5353", s)
	}
	spec := ListenSpec{Network: u.Scheme, Name: u.Fragment}
	switch u.Scheme {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		if u.Host == "" || u.Path != "" {
			return ListenSpec{}, fmt.Errorf("--listen %q: want %s://HOST:PORT", s, u.Scheme)
		}
		spec.Addr = u.Host
	case "unix", "unixgram":
		if u.Path == "" || u.Host != "" {
			return ListenSpec{}, fmt.Errorf("--listen %q: want %s:///absolute/path", s, u.Scheme)
		}
		spec.Addr = u.Path
	default:
		return ListenSpec{}, fmt.Errorf("--listen %q: unknown scheme %q (tcp, tcp4, tcp6, unix, udp, udp4, udp6, unixgram)", s, u.Scheme)
	}
	if spec.Name == "" {
		spec.Name = defaultFDName(spec)
	}
	if strings.ContainsAny(spec.Name, ":\n") || len(spec.Name) > 255 {
		return ListenSpec{}, fmt.Errorf("--listen %q: socket name %q must not contain ':' and must be at most 255 bytes", s, spec.Name)
	}
	return spec, nil
}

func defaultFDName(s ListenSpec) string {
	if s.Network == "unix" || s.Network == "unixgram" {
		i := strings.LastIndexByte(s.Addr, '/')
		return s.Addr[i+1:]
	}
	_, port, _ := strings.Cut(s.Addr, ":")
	if i := strings.LastIndexByte(s.Addr, ':'); i >= 0 {
		port = s.Addr[i+1:]
	}
	return s.Network + "_" + port
}

func (s ListenSpec) String() string {
	if s.Network == "unix" || s.Network == "unixgram" {
		return s.Network + "://" + s.Addr
	}
	return s.Network + "://" + s.Addr
}

// Orphan guards: what makes the generations die with the supervisor, even
// when it is killed outright (Config.OrphanGuard). On Windows neither
// applies: every generation is in the supervisor's kill-on-close job object.
const (
	GuardPdeathsig = "pdeathsig" // the kernel signals them (Linux, FreeBSD)
	GuardWatchdog  = "watchdog"  // a helper process kills them (elsewhere)
)

// Readiness says how the supervisor learns that a generation serves.
type Readiness struct {
	// Mode: "notify" (READY=1 on the NOTIFY_SOCKET the supervisor gives the
	// child; what the baton library's Ready sends), "http" (a 2xx for URL's
	// path), "tcp" (the app accepts a connection) or "delay" (Delay
	// elapsed; the last resort). http and tcp probes go through an extra
	// loopback socket only the new generation holds (LISTEN_FDNAMES entry
	// "baton-probe"): through the shared sockets an old generation could
	// answer for it. The app must serve that socket like the others.
	Mode  string
	URL   string
	Delay time.Duration
}

// Config is everything `baton run` is told.
type Config struct {
	Name         string
	Listen       []ListenSpec
	Command      []string // the app and its arguments
	Readiness    Readiness
	ReadyTimeout time.Duration // default 30s
	DrainSignal  syscall.Signal
	DrainTimeout time.Duration // then SIGKILL (default 30s)
	MaxDraining  int           // default 8
	// Probation: after a switch, the new generation must stay up (and, with
	// http readiness, healthy) this long, else the previous binary is
	// started again (rollback). 0 disables it.
	Probation time.Duration
	// Crash supervision: restart with back-off from RestartMin doubling up
	// to RestartMax; give up after MaxRestarts consecutive failed starts or
	// crashes (a generation that served for StableAfter resets the count).
	// MaxRestarts 0 means the default (5); a negative value means never
	// restart: the first crash ends the supervisor.
	RestartMin, RestartMax time.Duration
	MaxRestarts            int
	StableAfter            time.Duration
	// LogFile receives the generations' output (tagged lines) instead of
	// stdout, rotated when it would exceed LogMaxSize, keeping LogKeep old
	// files.
	LogFile    string
	LogMaxSize int64
	LogKeep    int
	// OrphanGuard: how generations die with a killed supervisor:
	// "pdeathsig" (the default on Linux and FreeBSD) or "watchdog" (a
	// helper process; the default elsewhere).
	OrphanGuard string
	// WatchBinary: upgrade when the app's binary changes on disk (opt-in).
	WatchBinary bool
	// Proxy: "" (hand-off mode: every generation shares the sockets) or
	// ProxyHTTP / ProxyTCP: the supervisor serves the sockets itself and
	// forwards to the generations, each on private loopback sockets, by
	// weight (blue/green switches, canaries). Sticky (http) pins a client
	// to its backend with a cookie.
	Proxy  string
	Sticky bool
	// Activator is the program that sets LISTEN_PID to its own pid and
	// execs the app (the baton binary itself: `baton __activate`).
	Activator []string
	Logger    *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Readiness.Mode == "" {
		c.Readiness.Mode = "notify"
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 30 * time.Second
	}
	if c.DrainSignal == 0 {
		c.DrainSignal = syscall.SIGTERM
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.MaxDraining <= 0 {
		c.MaxDraining = 8
	}
	if c.RestartMin <= 0 {
		c.RestartMin = 100 * time.Millisecond
	}
	if c.RestartMax <= 0 {
		c.RestartMax = 10 * time.Second
	}
	if c.MaxRestarts == 0 {
		c.MaxRestarts = 5
	}
	if c.StableAfter <= 0 {
		c.StableAfter = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first thing wrong with c (after defaults).
func (c *Config) Validate() error {
	c.setDefaults()
	switch {
	case c.Name == "":
		return errors.New("a name is required (--name)")
	case len(c.Command) == 0:
		return errors.New("no app to run: give it after --, e.g. baton run --name web --listen tcp://127.0.0.1:8080 -- ./app")
	case len(c.Listen) == 0:
		return errors.New("no socket to own: give at least one --listen")
	case len(c.Activator) == 0:
		return errors.New("internal: no activator")
	}
	switch c.Readiness.Mode {
	case "notify":
	case "http":
		// The probe talks plain HTTP to the new generation's probe socket.
		if u, err := url.Parse(c.Readiness.URL); err != nil || u.Scheme != "http" || u.Host == "" {
			return fmt.Errorf("--ready-http %q: want an http:// URL (the probe speaks plain HTTP to the new generation's own probe socket)", c.Readiness.URL)
		}
	case "tcp":
	case "delay":
		if c.Readiness.Delay <= 0 {
			return errors.New("--ready-delay needs a positive duration")
		}
	default:
		return fmt.Errorf("readiness %q: use notify, http, tcp or delay", c.Readiness.Mode)
	}
	if err := c.checkGuard(); err != nil {
		return err
	}
	if err := c.checkProxy(); err != nil {
		return err
	}
	names := map[string]bool{}
	for _, l := range c.Listen {
		if names[l.Name] {
			return fmt.Errorf("two sockets are named %q in LISTEN_FDNAMES; name them with #name", l.Name)
		}
		names[l.Name] = true
	}
	return nil
}

// checkProxy checks what proxy mode needs.
func (c *Config) checkProxy() error {
	switch c.Proxy {
	case "":
		if c.Sticky {
			return errors.New("--sticky needs --proxy http")
		}
		if usesPortPlaceholder(c.Command) {
			return fmt.Errorf("the app's arguments contain %s, which only --proxy fills in (with each generation's private port)", PortPlaceholder)
		}
		return nil
	case ProxyHTTP, ProxyTCP:
	default:
		return fmt.Errorf("--proxy %q: use http or tcp", c.Proxy)
	}
	if !proxySupported {
		return fmt.Errorf("--proxy is not available on this platform yet")
	}
	if c.Sticky && c.Proxy != ProxyHTTP {
		return errors.New("--sticky needs --proxy http (a tcp connection stays where it started anyway)")
	}
	for _, l := range c.Listen {
		if l.Network != "tcp" && l.Network != "tcp4" && l.Network != "tcp6" && l.Network != "unix" {
			return fmt.Errorf("--listen %s: --proxy forwards stream sockets only (tcp, unix)", l)
		}
	}
	if usesPortPlaceholder(c.Command) && len(c.Listen) != 1 {
		return fmt.Errorf("%s gives the app one private port: use it with exactly one --listen (got %d)", PortPlaceholder, len(c.Listen))
	}
	return nil
}
