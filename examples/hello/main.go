// Command hello is a small HTTP service built on baton: it can be upgraded
// to a new binary with `baton upgrade --name hello` (or SIGHUP) without
// losing a request.
//
// Every response carries X-Pid and X-Version headers, so that a client can
// see which generation answered. GET / and POST / answer 200; /sleep?ms=N
// answers after N milliseconds. The number of requests served is handed
// from generation to generation as baton state.
package main

import (
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

type state struct {
	Served int64  `json:"served"`
	Pad    string `json:"pad,omitempty"`
}

func main() {
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
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("app", "hello", "pid", os.Getpid(), "version", *version)
	var served atomic.Int64
	upg, err := baton.New(baton.Options{
		Name:         *name,
		PIDFile:      *pidFile,
		ReadyTimeout: *readyTimeout,
		DrainTimeout: *drainTimeout,
		MaxDraining:  *maxDraining,
		Logger:       log,
		StateFunc: func() ([]byte, error) {
			return json.Marshal(state{Served: served.Load(), Pad: string(make([]byte, *statePad))})
		},
	})
	if err != nil {
		log.Error("cannot start", "err", err)
		os.Exit(1)
	}
	defer upg.Stop()
	if b := upg.State(); b != nil {
		var st state
		if err := json.Unmarshal(b, &st); err != nil {
			log.Error("state from the previous generation unreadable", "err", err)
			os.Exit(1)
		}
		served.Store(st.Served)
	}
	gen := strconv.Itoa(upg.Generation())
	pid := strconv.Itoa(os.Getpid())

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
	mux.HandleFunc("/state", func(w http.ResponseWriter, r *http.Request) {
		answer(w, r)
		fmt.Fprintf(w, "served %d\n", served.Load())
	})

	srv := httpdrain.New(&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, httpdrain.Options{IdleGrace: *idleGrace, Logger: log})
	serve := func(network, address string) {
		ln, err := upg.Listen(network, address)
		if err != nil {
			log.Error("cannot listen", "network", network, "addr", address, "err", err)
			os.Exit(1)
		}
		go func() {
			if err := srv.Serve(ln); err != nil {
				log.Error("serve", "err", err)
			}
		}()
	}
	serve("tcp", *addr)
	if *unixPath != "" {
		serve("unix", *unixPath)
	}
	var udpDone sync.WaitGroup
	if *udpAddr != "" {
		pc, err := upg.ListenPacket("udp", *udpAddr)
		if err != nil {
			log.Error("cannot listen", "network", "udp", "addr", *udpAddr, "err", err)
			os.Exit(1)
		}
		udpDone.Add(1)
		go func() {
			defer udpDone.Done()
			echoUDP(pc, upg.Exit(), "pid="+pid+" version="+*version+" ", log)
		}()
	}

	time.Sleep(*startupDelay)
	if err := upg.Ready(); err != nil {
		log.Error("not ready", "err", err)
		os.Exit(1)
	}

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
		"conns_at_start", rep.ConnsAtStart, "forced_http", rep.ForcedHTTP, "forced_hijacked", rep.ForcedHijacked, "err", err)
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
