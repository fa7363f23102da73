// Command tableflip is the peer that `make bench` measures beside baton: the
// same HTTP behaviour as examples/hello, upgraded with cloudflare/tableflip
// and written the way tableflip's README and godoc example show it (PID
// file, SIGHUP -> Upgrade, Listen, serve, Ready, <-Exit, then
// http.Server.Shutdown with a deadline). It deliberately has no extra drain
// logic: we measure the peer as its users use it.
//
// It lives in its own module so that baton's module does not depend on
// tableflip.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

// buildVersion is the default of -version (set with -ldflags "-X main.buildVersion=v2").
var buildVersion = "dev"

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "TCP address to serve HTTP on")
	pidFile := flag.String("pidfile", "", "tableflip writes the ready generation's pid here")
	version := flag.String("version", buildVersion, "version string reported in X-Version")
	drainTimeout := flag.Duration("drain-timeout", 30*time.Second, "deadline of http.Server.Shutdown after an upgrade")
	flag.Parse()
	log.SetPrefix(fmt.Sprintf("tableflip-peer %d ", os.Getpid()))

	upg, err := tableflip.New(tableflip.Options{PIDFile: *pidFile})
	if err != nil {
		log.Fatalln("tableflip:", err)
	}
	defer upg.Stop()

	// Upgrade on SIGHUP, as in tableflip's example; stop on SIGINT/SIGTERM.
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
		for s := range sig {
			if s != syscall.SIGHUP {
				upg.Stop()
				continue
			}
			if err := upg.Upgrade(); err != nil {
				log.Println("Upgrade failed:", err)
			}
		}
	}()

	// hello's answers: X-Pid, X-Version and X-Generation on every response.
	// tableflip numbers no generations; a child inherits its parent's
	// environment, so we count them there.
	pid := strconv.Itoa(os.Getpid())
	n, _ := strconv.Atoi(os.Getenv("PEER_GENERATION"))
	gen := strconv.Itoa(max(n, 1))
	os.Setenv("PEER_GENERATION", strconv.Itoa(max(n, 1)+1))
	answer := func(w http.ResponseWriter) {
		w.Header().Set("X-Pid", pid)
		w.Header().Set("X-Version", *version)
		w.Header().Set("X-Generation", gen)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodPost && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		answer(w)
		fmt.Fprintf(w, "hello from %s pid %s (read %d bytes)\n", *version, pid, n)
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
		answer(w)
		fmt.Fprintf(w, "slept %d ms in %s pid %s\n", ms, *version, pid)
	})

	// Listen must be called before Ready: a child gets its parent's socket.
	ln, err := upg.Listen("tcp", *addr)
	if err != nil {
		log.Fatalln("Can't listen:", err)
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := server.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Println("HTTP server:", err)
		}
	}()

	if err := upg.Ready(); err != nil {
		log.Fatalln("Ready:", err)
	}
	<-upg.Exit()

	// The idiomatic drain: Shutdown closes the listener and idle
	// connections, then waits for active requests, bounded by a deadline.
	ctx, cancel := context.WithTimeout(context.Background(), *drainTimeout)
	defer cancel()
	if err := server.Shutdown(ctx); err != nil {
		log.Println("Shutdown:", err)
	}
}
