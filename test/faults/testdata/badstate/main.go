// Command badstate is a release whose state blob the next release cannot
// read: it serves like examples/hello (X-Pid, X-Version on every answer)
// and takes the same flags, but hands over a truncated JSON document as its
// state. Upgrading it to hello is the fault "corrupt state" of make faults:
// hello refuses the blob before it is ready, and badstate keeps serving.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/baton-go/baton"
	"github.com/baton-go/baton/httpdrain"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "TCP address to serve HTTP on")
	name := flag.String("name", "badstate", "control endpoint name")
	idleGrace := flag.Duration("idle-grace", 2*time.Second, "idle keep-alive grace after a handover")
	readyTimeout := flag.Duration("ready-timeout", 30*time.Second, "how long a new generation may take to become ready")
	flag.Parse()
	upg, err := baton.New(baton.Options{
		Name: *name, ReadyTimeout: *readyTimeout, IdleGrace: *idleGrace,
		// Well framed and checksummed by baton, unreadable for hello.
		StateFunc: func() ([]byte, error) { return []byte(`{"served": 12, "pad": "`), nil },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "badstate:", err)
		os.Exit(1)
	}
	defer upg.Stop()
	pid := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Pid", pid)
		w.Header().Set("X-Version", "badstate")
		fmt.Fprintf(w, "badstate pid %s\n", pid)
	})
	srv := httpdrain.New(&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, httpdrain.Options{IdleGrace: upg.IdleGrace()})
	ln, err := upg.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "badstate:", err)
		os.Exit(1)
	}
	go srv.Serve(ln)
	if err := upg.Ready(); err != nil {
		fmt.Fprintln(os.Stderr, "badstate:", err)
		os.Exit(1)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-upg.Exit():
	case <-stop:
		upg.Stop()
	}
	ctx, cancel := upg.DrainContext()
	defer cancel()
	srv.Drain(ctx)
}
