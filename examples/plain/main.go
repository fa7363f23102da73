// Command plain is an HTTP app that knows nothing about baton: it takes its
// listening socket from systemd-style socket activation (LISTEN_FDS) and
// drains on SIGTERM. It runs unchanged under systemd or under `baton run`:
//
//	baton run --name plain --listen tcp://127.0.0.1:8080 \
//	    --ready-http http://127.0.0.1:8080/healthz -- ./plain
//
// Every response carries X-Pid and X-Version; GET /healthz answers 200 once
// the app is ready; /sleep?ms=N answers after N milliseconds.
package main

import (
	"context"
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
	"syscall"
	"time"

	"github.com/baton-go/baton/httpdrain"
	"github.com/coreos/go-systemd/v22/activation"
)

var buildVersion = "dev"

// buildCrashAfter, set at build time, is the default of -crash-after: a
// release that crashes a while after it became ready (rollback tests).
var buildCrashAfter = ""

// buildUnhealthyAfter, set at build time, is the default of
// -unhealthy-after: a release whose health check fails a while after it
// became ready, while it keeps serving (probation tests).
var buildUnhealthyAfter = ""

func main() {
	version := flag.String("version", buildVersion, "version string reported in X-Version")
	startup := flag.Duration("startup-delay", 0, "pretend start-up work before /healthz answers 200")
	defCrash, _ := time.ParseDuration(buildCrashAfter)
	crashAfter := flag.Duration("crash-after", defCrash, "exit 2 this long after start (for tests)")
	defUnhealthy, _ := time.ParseDuration(buildUnhealthyAfter)
	unhealthyAfter := flag.Duration("unhealthy-after", defUnhealthy, "/healthz answers 503 from this long after start on (for tests)")
	grace := flag.Duration("idle-grace", 2*time.Second, "idle keep-alive grace when draining")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("app", "plain", "pid", os.Getpid())

	listeners, err := activation.Listeners()
	if err != nil || len(listeners) == 0 {
		fmt.Fprintln(os.Stderr, "plain: no socket from socket activation (LISTEN_FDS); run me under systemd or baton run")
		os.Exit(1)
	}
	pid := strconv.Itoa(os.Getpid())
	readyAt := time.Now().Add(*startup)
	sickAt := time.Now().Add(*unhealthyAfter)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", pid)
		if time.Now().Before(readyAt) {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		if *unhealthyAfter > 0 && time.Now().After(sickAt) {
			http.Error(w, "unhealthy (test build)", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Pid", pid)
		w.Header().Set("X-Version", *version)
		fmt.Fprintf(w, "plain %s pid %s\n", *version, pid)
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(min(ms, 600_000)) * time.Millisecond)
		w.Header().Set("X-Pid", pid)
		w.Header().Set("X-Version", *version)
		fmt.Fprintf(w, "slept %d ms\n", ms)
	})
	srv := httpdrain.New(&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, httpdrain.Options{IdleGrace: *grace, Logger: log})
	for _, ln := range listeners {
		go func(ln net.Listener) {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
				log.Error("serve", "err", err)
			}
		}(ln)
	}
	log.Info("serving", "sockets", len(listeners), "version", *version)
	if *crashAfter > 0 {
		time.AfterFunc(*crashAfter, func() {
			log.Error("crashing on purpose", "after", *crashAfter)
			os.Exit(2)
		})
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := srv.Drain(ctx)
	log.Info("drained", "took", rep.Finished.Sub(rep.Started).Round(time.Millisecond), "forced", rep.ForcedHTTP, "err", err)
}
