package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/metrics"
	"github.com/baton-go/baton/supervisor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// runFlags are `baton run`'s flags; `baton service install` takes the same
// ones and writes them into the service's command line.
type runFlags struct {
	cfg        supervisor.Config
	listens    []string
	readyHTTP  string
	readyTCP   bool
	readyDelay time.Duration
	drainSig   string
	configFile string
	asService  bool // hidden: the process the SCM started (Windows)

	metricsAddr string // --metrics: serve Prometheus metrics here

	// --http-control: the control operations over HTTP.
	httpControl       string
	httpTokenFile     string
	httpAllowRemote   bool
	httpRatePerMinute int
}

// bind registers the flags on fs.
func (r *runFlags) bind(f *pflag.FlagSet) {
	cfg := &r.cfg
	f.StringVar(&r.configFile, "config", "", "read settings from this TOML file: the keys are these flags' long names, plus command = [\"./app\", ...]; the command line wins")
	f.StringVarP(&cfg.Name, "name", "n", "", "name of the control endpoint (baton upgrade/status/stop --name NAME)")
	f.StringArrayVar(&r.listens, "listen", nil, "a socket to own and hand to the app (repeatable), e.g. tcp://127.0.0.1:8080")
	f.StringVar(&r.readyHTTP, "ready-http", "", "ready when the new generation answers this URL's path with 2xx (asked through its own probe socket)")
	f.BoolVar(&r.readyTCP, "ready-tcp", false, "ready when the new generation accepts a TCP connection (on its own probe socket)")
	f.DurationVar(&r.readyDelay, "ready-delay", 0, "ready after this long (last resort)")
	f.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 30*time.Second, "a generation not ready by then is killed (the old one keeps serving)")
	f.StringVar(&r.drainSig, "drain-signal", "TERM", "signal that tells an old generation to drain")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "an old generation still running this long after the drain signal is killed")
	f.IntVar(&cfg.MaxDraining, "max-draining", 8, "how many old generations may drain at once")
	f.StringVar(&cfg.Proxy, "proxy", "", "proxy mode: http or tcp: baton serves the --listen sockets itself and forwards to the generations (each on private loopback sockets) by weight, for blue/green switches and canaries (baton upgrade --canary)")
	f.BoolVar(&cfg.Sticky, "sticky", false, "with --proxy http: pin each client to the generation that answered it first (a cookie) while that generation has a weight")
	f.StringVar(&cfg.OrphanGuard, "orphan-guard", "", "how generations die if the supervisor is killed: pdeathsig (default on Linux, FreeBSD) or watchdog (a helper process; default elsewhere)")
	f.BoolVar(&cfg.WatchBinary, "watch-binary", false, "upgrade by itself when the app's binary changes on disk (checked every second)")
	f.DurationVar(&cfg.Probation, "probation", 0, "after an upgrade, roll back to the previous binary if the new generation exits (or fails its http health probe) within this time; baton upgrade waits for it")
	f.DurationVar(&cfg.RestartMin, "restart-min", 100*time.Millisecond, "first back-off before restarting a dead generation")
	f.DurationVar(&cfg.RestartMax, "restart-max", 10*time.Second, "longest back-off")
	f.IntVar(&cfg.MaxRestarts, "max-restarts", 5, "after this many quick crashes in a row, fall back once to the release that served before the crashing one, or give up (exit 1) when there is none; 0: never restart (exit 1 at the first crash)")
	f.DurationVar(&cfg.StableAfter, "stable-after", 10*time.Second, "a generation that ran this long ends a crash series")
	f.StringVar(&cfg.LogFile, "log-file", "", "write the generations' output (tagged lines) here instead of stdout, rotated by size")
	f.Int64Var(&cfg.LogMaxSize, "log-max-size", 10<<20, "rotate the log file when it would exceed this many bytes")
	f.IntVar(&cfg.LogKeep, "log-keep", 3, "rotated log files to keep (FILE.1 ... FILE.N)")
	f.StringVar(&r.metricsAddr, "metrics", "", "serve Prometheus metrics of the service (all its generations) at http://ADDR/metrics; use a loopback address such as 127.0.0.1:9464 unless the network in between is yours (docs/metrics.md)")
	f.StringVar(&r.httpControl, "http-control", "", "also answer the control operations over HTTP+JSON at ADDR (POST /v1/upgrade, POST /v1/rollback, GET /v1/status, POST /v1/stop, GET /v1/logs), each request with the bearer token of --http-control-token-file; a loopback address (docs/http-control.md)")
	f.StringVar(&r.httpTokenFile, "http-control-token-file", "", "the file holding --http-control's bearer token (required with it; mode 600, owned by this user)")
	f.BoolVar(&r.httpAllowRemote, "http-control-allow-remote", false, "let --http-control listen on an address other than a loopback one (anyone who can reach it and has the token can upgrade or stop the service)")
	f.IntVar(&r.httpRatePerMinute, "http-control-rate", supervisor.DefaultHTTPControlRate, "--http-control answers at most this many requests a minute (in bursts of as many); more get 429")
}

// runFlagNames are the long names bind registers, in its order.
func runFlagNames() []string {
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	var r runFlags
	r.bind(fs)
	var names []string
	fs.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	return names
}

// args are the flags of fs among runFlagNames that the command line set,
// as `baton run` arguments (--flag=value; a repeatable flag once per value),
// minus those in skip.
func (r *runFlags) args(fs *pflag.FlagSet, skip ...string) []string {
	var out []string
next:
	for _, n := range runFlagNames() {
		for _, s := range skip {
			if s == n {
				continue next
			}
		}
		f := fs.Lookup(n)
		if f == nil || !f.Changed {
			continue
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				out = append(out, "--"+n+"="+v)
			}
			continue
		}
		out = append(out, "--"+n+"="+f.Value.String())
	}
	return out
}

// toConfig builds the supervisor's config from the flags, the config file
// and the app's command line (args after --).
func (r *runFlags) toConfig(cmd *cobra.Command, args []string) (supervisor.Config, error) {
	var cfg supervisor.Config
	if len(args) > 0 && cmd.ArgsLenAtDash() != 0 {
		return cfg, &exitError{code: contract.CodeUsage, err: fmt.Errorf("put the app after --, e.g. %s --name web --listen tcp://127.0.0.1:8080 -- ./app", cmd.CommandPath())}
	}
	if r.configFile != "" {
		command, err := applyConfigFile(cmd, r.configFile)
		if err != nil {
			return cfg, &exitError{code: contract.CodeUsage, err: err}
		}
		if len(args) == 0 {
			args = command
		}
	}
	cfg = r.cfg // after the file: it sets the flags the command line did not
	if len(args) == 0 {
		return cfg, &exitError{code: contract.CodeUsage, err: errors.New("no app to run: give it after --, or as command = [...] in --config")}
	}
	cfg.Command = args
	for _, l := range r.listens {
		spec, err := supervisor.ParseListen(l)
		if err != nil {
			return cfg, &exitError{code: contract.CodeUsage, err: err}
		}
		cfg.Listen = append(cfg.Listen, spec)
	}
	n := 0
	if r.readyHTTP != "" {
		cfg.Readiness = supervisor.Readiness{Mode: "http", URL: r.readyHTTP}
		n++
	}
	if r.readyTCP {
		cfg.Readiness = supervisor.Readiness{Mode: "tcp"}
		n++
	}
	if r.readyDelay != 0 {
		cfg.Readiness = supervisor.Readiness{Mode: "delay", Delay: r.readyDelay}
		n++
	}
	if n > 1 {
		return cfg, &exitError{code: contract.CodeUsage, err: errors.New("choose one of --ready-http, --ready-tcp and --ready-delay")}
	}
	sig, err := parseSignal(r.drainSig)
	if err != nil {
		return cfg, &exitError{code: contract.CodeUsage, err: err}
	}
	cfg.DrainSignal = sig
	switch {
	case cfg.MaxDraining < 1:
		return cfg, &exitError{code: contract.CodeUsage, err: fmt.Errorf("--max-draining %d: at least 1 old generation must be allowed to drain, or no upgrade could ever happen", cfg.MaxDraining)}
	case cfg.MaxRestarts < 0:
		return cfg, &exitError{code: contract.CodeUsage, err: fmt.Errorf("--max-restarts %d: give 0 (never restart) or more", cfg.MaxRestarts)}
	case cfg.MaxRestarts == 0:
		cfg.MaxRestarts = -1 // Config's "never restart"
	}
	exe, err := os.Executable()
	if err != nil {
		return cfg, &exitError{code: contract.CodeInternal, err: err}
	}
	cfg.Activator = []string{exe, activateCmd}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("supervisor", cfg.Name)
	if err := cfg.Validate(); err != nil {
		return cfg, &exitError{code: contract.CodeUsage, err: err}
	}
	return cfg, nil
}

func newRunCmd() *cobra.Command {
	var r runFlags
	c := &cobra.Command{
		Use:   "run --name NAME --listen URL [--listen URL...] [flags] -- APP [ARGS...]",
		Short: "Supervise an app: own its sockets, keep one pid, upgrade it without downtime",
		Long: `Run APP as generations under a supervisor with a stable pid (for systemd or
any process manager). The supervisor binds every --listen socket and hands
them to each generation by systemd socket activation (LISTEN_FDS,
LISTEN_FDNAMES, LISTEN_PID): an app that supports socket activation, or uses
the baton library, works unchanged.

'baton upgrade --name NAME' (or SIGHUP to the supervisor) starts a new
generation on the same sockets, waits until it is ready, then sends the old
one the drain signal and kills it at the drain deadline. A generation that
dies outside an upgrade is restarted with back-off; clients wait in the
accept queue meanwhile. SIGTERM, SIGINT or 'baton stop' drain everything.

Readiness (one of): --ready-http URL (a 2xx), --ready-tcp (the app accepts
a connection), --ready-delay D, or by default READY=1 on the NOTIFY_SOCKET
the supervisor gives each generation (what the baton library's Ready
sends). All generations share the sockets, so http and tcp probes go through
one more socket that only the new generation gets (named "baton-probe" in
LISTEN_FDNAMES): the app must serve every socket it is given.

Proxy mode (--proxy http|tcp): the supervisor serves the --listen sockets
itself and forwards each request (http: per request, keep-alive both ways,
streaming, WebSocket pass-through, X-Forwarded-For and Forwarded) or each
connection (tcp) to a generation by weight. Each generation gets private
loopback sockets by socket activation instead (a library app asking for the
public address gets the private socket standing for it); an app that binds
its own port gets a private one through {port} in its arguments. An upgrade
then switches weights: blue/green by default, or a canary judged against
the stable generation with baton upgrade --canary P / --steps, steered with
baton promote, baton weight and baton rollback. See docs/proxy-mode.md.

--listen URLs: tcp://127.0.0.1:8080, tcp6://[::1]:8080, unix:///run/app.sock,
udp://:5353, unixgram:///run/app.dgram; add #name to set its LISTEN_FDNAMES
entry.

` + exitCodesHelp,
		Example: `  baton run --name web --listen tcp://127.0.0.1:8080 -- ./hello -name ""
  baton run --name web --listen tcp://127.0.0.1:8080 --ready-http http://127.0.0.1:8080/healthz -- ./plain
  baton run --name web --proxy http --listen tcp://127.0.0.1:8080 -- ./hello -name ""
  baton run --name web --proxy http --listen tcp://127.0.0.1:8080 --ready-tcp -- ./plain -port {port}`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := r.toConfig(cmd, args)
			if err != nil {
				return err
			}
			if r.asService {
				if r.metricsAddr != "" || r.httpControl != "" {
					return &exitError{code: contract.CodeUnsupported, err: errors.New("--metrics and --http-control are not served by the Windows service yet: run baton run in a console, or leave them out")}
				}
				// The process the SCM started (baton service install
				// writes --as-service into its command line).
				return runAsService(cfg)
			}
			return r.run(cfg)
		},
	}
	f := c.Flags()
	r.bind(f)
	f.BoolVar(&r.asService, asServiceFlag, false, "run as the Windows service the SCM started (written by baton service install)")
	_ = f.MarkHidden(asServiceFlag)
	return c
}

// run supervises the app, with the HTTP endpoints asked for (--metrics,
// --http-control). Their addresses are bound and their token read first:
// any of them failing fails the start before anything else is taken.
func (r *runFlags) run(cfg supervisor.Config) error {
	var metricsLn, controlLn net.Listener
	var err error
	if r.metricsAddr != "" {
		if metricsLn, err = listenFlag("metrics", r.metricsAddr); err != nil {
			return err
		}
		defer metricsLn.Close()
	}
	var controlCfg supervisor.HTTPControlConfig
	if r.httpControl != "" {
		if controlLn, controlCfg, err = r.openHTTPControl(cfg.Logger); err != nil {
			return err
		}
		defer controlLn.Close()
	}
	s, err := supervisor.New(cfg, os.Stdout)
	if err != nil {
		return &exitError{code: contract.CodeFailed, err: err}
	}
	if metricsLn != nil {
		stop := serveMetrics(metricsLn, s, cfg.Logger)
		defer stop()
	}
	if controlLn != nil {
		stop, err := s.ServeHTTPControl(controlLn, controlCfg)
		if err != nil {
			return &exitError{code: contract.CodeUsage, err: err}
		}
		defer stop()
	}
	// Run handles SIGHUP, SIGTERM and SIGINT itself.
	if err := s.Run(context.Background()); err != nil {
		return &exitError{code: contract.CodeFailed, err: err}
	}
	return nil
}

// openHTTPControl reads --http-control's token and binds its address, a
// loopback one unless --http-control-allow-remote.
func (r *runFlags) openHTTPControl(log *slog.Logger) (net.Listener, supervisor.HTTPControlConfig, error) {
	var cfg supervisor.HTTPControlConfig
	if r.httpTokenFile == "" {
		return nil, cfg, &exitError{code: contract.CodeUsage, err: errors.New("--http-control needs --http-control-token-file FILE: the bearer token every request must carry (e.g. head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE)")}
	}
	if r.httpRatePerMinute < 1 {
		return nil, cfg, &exitError{code: contract.CodeUsage, err: fmt.Errorf("--http-control-rate %d: at least 1 request a minute", r.httpRatePerMinute)}
	}
	tok, err := supervisor.ReadTokenFile(r.httpTokenFile)
	if err != nil {
		return nil, cfg, &exitError{code: contract.CodeUsage, err: err}
	}
	ln, err := listenFlag("http-control", r.httpControl)
	if err != nil {
		return nil, cfg, err
	}
	if err := supervisor.CheckHTTPControlAddr(ln.Addr(), r.httpAllowRemote); err != nil {
		ln.Close()
		return nil, cfg, &exitError{code: contract.CodeUsage, err: fmt.Errorf("--http-control %s: %w", r.httpControl, err)}
	}
	if supervisor.CheckHTTPControlAddr(ln.Addr(), false) != nil {
		log.Warn("--http-control listens beyond this host: whoever reaches it with the token can upgrade, roll back or stop the service; put TLS in front of it (the token travels in clear HTTP)", "addr", ln.Addr().String())
	}
	return ln, supervisor.HTTPControlConfig{Token: tok, RatePerMinute: r.httpRatePerMinute}, nil
}

// listenFlag binds the TCP address addr of --flag: a malformed address is
// a usage error, one that cannot be bound (in use, not ours) a failure.
func listenFlag(flag, addr string) (net.Listener, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, &exitError{code: contract.CodeUsage, err: fmt.Errorf("--%s %q: want HOST:PORT, e.g. 127.0.0.1:9464: %w", flag, addr, err)}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &exitError{code: contract.CodeFailed, err: fmt.Errorf("--%s %s: cannot listen: %w", flag, addr, err)}
	}
	return ln, nil
}

// serveMetrics answers scrapes on ln at /metrics: the service's baton
// metrics (the supervisor answers for every generation) and the
// supervisor process's own (process_*, go_*). stop closes it.
func serveMetrics(ln net.Listener, s *supervisor.Supervisor, log *slog.Logger) (stop func()) {
	reg := prometheus.NewRegistry()
	col := metrics.NewCollector(s)
	reg.MustRegister(col, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	go srv.Serve(ln)
	return func() {
		srv.Close()
		col.Close()
	}
}

// asServiceFlag makes `baton run` the process of a Windows service.
const asServiceFlag = "as-service"

func parseSignal(s string) (syscall.Signal, error) {
	switch strings.TrimPrefix(strings.ToUpper(s), "SIG") {
	case "TERM":
		return syscall.SIGTERM, nil
	case "INT":
		return syscall.SIGINT, nil
	case "QUIT":
		return syscall.SIGQUIT, nil
	case "HUP":
		return syscall.SIGHUP, nil
	case "USR1":
		return sigUSR1, nil
	case "USR2":
		return sigUSR2, nil
	}
	return 0, fmt.Errorf("--drain-signal %q: use TERM, INT, QUIT, HUP, USR1 or USR2", s)
}
