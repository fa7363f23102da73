// Command hello is a small HTTP service built on baton: it can be upgraded
// to a new binary with `baton upgrade --name hello` (or SIGHUP) without
// losing a request.
//
// Every response carries X-Pid and X-Version headers, so that a client can
// see which generation answered. GET / and POST / answer 200; /sleep?ms=N
// answers after N milliseconds; GET /healthz answers 200 once this
// generation is ready (for `baton run --ready-http URL --probation D`). The
// number of requests served is handed from generation to generation as
// baton state.
//
// HTTP/2 is opt-in: -h2c also accepts HTTP/2 without TLS (prior knowledge)
// on every listener, and -tls-cert/-tls-key serve HTTPS on -addr, with
// HTTP/2 offered through ALPN. Without these flags hello speaks plain
// HTTP/1.1.
package main

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-go/baton"
	"github.com/baton-go/baton/httpdrain"
)

// buildVersion is the default of -version; release builds set it with
// -ldflags "-X main.buildVersion=v2".
var buildVersion = "dev"

// brokenRelease, when set at build time, makes this binary fail after it
// has opened its listeners and before it is ready, the way a release with a
// bad configuration does (used by the failure tests).
var brokenRelease = ""

// hangBeforeReady, when set at build time, makes this binary serve but never
// call Ready, the way a release stuck in its start-up does (tests).
var hangBeforeReady = ""

// buildUnhealthyAfter and buildExitAfter, set at build time, are the
// defaults of -unhealthy-after and -exit-after: a release that turns
// unhealthy, or exits, a while after it became ready (probation tests:
// under baton run every generation gets the same arguments, so the
// behaviour comes with the binary).
var (
	buildUnhealthyAfter = ""
	buildExitAfter      = ""
	// buildErrorEvery: the default of -error-every (a sick canary).
	buildErrorEvery = ""
)

type state struct {
	Served int64  `json:"served"`
	Pad    string `json:"pad,omitempty"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8080", "TCP address to serve HTTP on")
	name := flag.String("name", "hello", "control endpoint name (baton upgrade --name NAME)")
	version := flag.String("version", buildVersion, "version string reported in X-Version (default: the version built in)")
	unixPath := flag.String("unix", "", "also serve HTTP on this unix socket path")
	udpAddr := flag.String("udp", "", "also answer UDP datagrams on this address (echo with pid)")
	pidFile := flag.String("pidfile", "", "write the serving generation's pid here")
	idleGrace := flag.Duration("idle-grace", 2*time.Second, "how long idle keep-alive connections stay open after a handover")
	drainTimeout := flag.Duration("drain-timeout", 30*time.Second, "drain deadline after a handover")
	readyTimeout := flag.Duration("ready-timeout", 30*time.Second, "how long a new generation may take to become ready")
	maxDraining := flag.Int("max-draining", 8, "how many old generations may drain at once")
	startupDelay := flag.Duration("startup-delay", 0, "pretend start-up work before Ready (for benchmarks)")
	statePad := flag.Int("state-pad", 0, "add this many bytes to the state blob (for testing the bound)")
	eventLog := flag.String("event-log", "", "append one line per generation event to this file (opened once, then inherited)")
	defUnhealthy, _ := time.ParseDuration(buildUnhealthyAfter)
	unhealthyAfter := flag.Duration("unhealthy-after", defUnhealthy, "/healthz answers 503 from this long after Ready on, while serving goes on (for tests; 0: never)")
	defExit, _ := time.ParseDuration(buildExitAfter)
	exitAfter := flag.Duration("exit-after", defExit, "exit 2 at once, in-flight requests cut, this long after Ready (for tests; 0: never)")
	defErrorEvery, _ := strconv.Atoi(buildErrorEvery)
	errorEvery := flag.Int("error-every", defErrorEvery, "answer / with 500 to every Nth request (for canary tests; 0: never)")
	debugGoroutines := flag.Bool("debug-goroutines", false, "serve GET /debug/goroutines: this generation's goroutine count (for the soak test; off by default)")
	h2c := flag.Bool("h2c", false, "also accept HTTP/2 without TLS (prior knowledge) on every listener")
	tlsCert := flag.String("tls-cert", "", "serve HTTPS on -addr with this PEM certificate (with -tls-key; HTTP/2 and HTTP/1.1 through ALPN)")
	tlsKey := flag.String("tls-key", "", "PEM private key of -tls-cert")
	flag.Parse()
	if (*tlsCert == "") != (*tlsKey == "") {
		return errors.New("-tls-cert and -tls-key go together")
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("app", "hello", "pid", os.Getpid(), "version", *version)
	var served atomic.Int64
	var rootServed atomic.Int64 // requests for /, for -error-every
	upg, err := baton.New(baton.Options{
		Name:         *name,
		PIDFile:      *pidFile,
		ReadyTimeout: *readyTimeout,
		DrainTimeout: *drainTimeout,
		IdleGrace:    *idleGrace,
		MaxDraining:  *maxDraining,
		Logger:       log,
		StateFunc: func() ([]byte, error) {
			return json.Marshal(state{Served: served.Load(), Pad: string(make([]byte, *statePad))})
		},
	})
	if err != nil {
		return fmt.Errorf("cannot start: %w", err)
	}
	defer upg.Stop()
	if b := upg.State(); b != nil {
		var st state
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("state from the previous generation unreadable: %w", err)
		}
		served.Store(st.Served)
	}
	gen := strconv.Itoa(upg.Generation())
	pid := strconv.Itoa(os.Getpid())
	var events io.Writer = io.Discard
	if *eventLog != "" {
		// Opened by the first generation only; later ones inherit the same
		// open file from baton (even if the path was rotated away).
		f, err := upg.File("event-log", func() (*os.File, error) {
			return os.OpenFile(*eventLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		})
		if err != nil {
			return err
		}
		events = f
	}
	fmt.Fprintf(events, "generation %s pid %s version %s starting\n", gen, pid, *version)

	var readyAt atomic.Pointer[time.Time] // nil until Ready
	mux := http.NewServeMux()
	answer := func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		w.Header().Set("X-Pid", pid)
		w.Header().Set("X-Version", *version)
		w.Header().Set("X-Generation", gen)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodPost && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		answer(w, r)
		if *errorEvery > 0 && rootServed.Add(1)%int64(*errorEvery) == 0 {
			http.Error(w, "a bad release: error on purpose (-error-every)", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "hello from %s pid %s generation %s (read %d bytes)\n", *version, pid, gen, n)
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 || ms > 600_000 {
			http.Error(w, "ms must be 0..600000", http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		answer(w, r)
		fmt.Fprintf(w, "slept %d ms in %s pid %s\n", ms, *version, pid)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", pid)
		w.Header().Set("X-Version", *version)
		at := readyAt.Load()
		switch {
		case at == nil:
			http.Error(w, "starting", http.StatusServiceUnavailable)
		case *unhealthyAfter > 0 && time.Since(*at) >= *unhealthyAfter:
			http.Error(w, "unhealthy (-unhealthy-after)", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	mux.HandleFunc("/state", func(w http.ResponseWriter, r *http.Request) {
		answer(w, r)
		fmt.Fprintf(w, "served %d\n", served.Load())
	})

	if *debugGoroutines {
		mux.HandleFunc("/debug/goroutines", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Pid", pid)
			fmt.Fprintln(w, runtime.NumGoroutine())
		})
	}

	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if *h2c {
		hs.Protocols = new(http.Protocols)
		hs.Protocols.SetHTTP1(true)
		hs.Protocols.SetHTTP2(true)
		hs.Protocols.SetUnencryptedHTTP2(true)
	}
	var tlsConf *tls.Config
	if *tlsCert != "" {
		// Read by every generation: a renewed certificate is picked up by
		// the next upgrade.
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return fmt.Errorf("TLS key pair: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	}
	srv := httpdrain.New(hs, httpdrain.Options{IdleGrace: upg.IdleGrace(), Logger: log})
	serve := func(network, address string, conf *tls.Config) error {
		ln, err := upg.Listen(network, address)
		if err != nil {
			return err
		}
		if conf != nil {
			ln = tls.NewListener(ln, conf)
		}
		go func() {
			if err := srv.Serve(ln); err != nil {
				log.Error("serve", "err", err)
			}
		}()
		return nil
	}
	if err := serve("tcp", *addr, tlsConf); err != nil {
		return err
	}
	if *unixPath != "" {
		if err := serve("unix", *unixPath, nil); err != nil {
			return err
		}
	}
	var udpDone sync.WaitGroup
	if *udpAddr != "" {
		pc, err := upg.ListenPacket("udp", *udpAddr)
		if err != nil {
			return err
		}
		udpDone.Add(1)
		go func() {
			defer udpDone.Done()
			echoUDP(pc, upg.Exit(), "pid="+pid+" version="+*version+" ", log)
		}()
	}

	if *startupDelay > 0 {
		time.Sleep(*startupDelay)
		log.Info("start-up work done", "took", *startupDelay)
	}
	if brokenRelease != "" {
		return fmt.Errorf("broken release: %s", brokenRelease)
	}
	if hangBeforeReady != "" {
		log.Warn("serving but never ready (test build)")
		time.Sleep(10 * time.Minute)
	}
	if err := upg.Ready(); err != nil {
		return fmt.Errorf("not ready: %w", err)
	}
	now := time.Now()
	readyAt.Store(&now)
	if *exitAfter > 0 {
		time.AfterFunc(*exitAfter, func() {
			log.Error("exiting on purpose (-exit-after)", "after", *exitAfter)
			os.Exit(2)
		})
	}
	fmt.Fprintf(events, "generation %s pid %s ready\n", gen, pid)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-upg.Exit():
		log.Info("handed over; draining")
	case s := <-stop:
		log.Info("stopping", "signal", s.String())
		upg.Stop()
	}
	ctx, cancel := upg.DrainContext()
	defer cancel()
	rep, err := srv.Drain(ctx)
	udpDone.Wait()
	log.Info("drained", "took", rep.Finished.Sub(rep.Started).Round(time.Millisecond),
		"conns_at_start", rep.ConnsAtStart, "migrated", rep.Migrated, "migration_failed", rep.MigrationFailed, "forced_http", rep.ForcedHTTP, "forced_hijacked", rep.ForcedHijacked, "err", err)
	return nil
}

// echoUDP answers each datagram with prefix+payload until the generation
// hands over (baton then makes reads fail; queued datagrams go to the new
// generation).
func echoUDP(pc net.PacketConn, exit <-chan struct{}, prefix string, log *slog.Logger) {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			select {
			case <-exit:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Warn("udp read", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if _, err := pc.WriteTo(append([]byte(prefix), buf[:n]...), from); err != nil {
			log.Warn("udp write", "err", err)
		}
	}
}
