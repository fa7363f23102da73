package baton_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"

	"github.com/baton-go/baton"
	"github.com/baton-go/baton/httpdrain"
)

// A complete service: listeners from baton, Ready once serving, drain when
// the next generation has taken over. Upgrade it with
// `baton upgrade --name hello` or SIGHUP.
func Example() {
	upg, err := baton.New(baton.Options{Name: "hello"})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	ln, err := upg.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	srv := httpdrain.New(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from generation %d\n", upg.Generation())
	})}, httpdrain.Options{IdleGrace: upg.IdleGrace()})
	go srv.Serve(ln)

	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}
	<-upg.Exit()
	ctx, cancel := upg.DrainContext()
	defer cancel()
	srv.Drain(ctx)
}

// Listeners and files are inherited by address or name when a previous
// generation handed them over, and created otherwise.
func ExampleUpgrader_Listen() {
	upg, err := baton.New(baton.Options{UpgradeSignal: baton.NoSignal})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	ln, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("listening:", ln.Addr().Network())
	fmt.Println("generation:", upg.Generation(), "has parent:", upg.HasParent())
	// Output:
	// listening: tcp
	// generation: 1 has parent: false
}

// An upgrade reports exactly what went wrong; the running generation keeps
// serving in every failure case.
func ExampleUpgrader_Upgrade() {
	upg, err := baton.New(baton.Options{UpgradeSignal: baton.NoSignal, Binary: "/nonexistent/app"})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}
	_, err = upg.Upgrade(context.Background())
	var exited *baton.ChildExitError
	switch {
	case errors.Is(err, baton.ErrBinary):
		fmt.Println("binary missing or not executable; still serving")
	case errors.As(err, &exited):
		fmt.Printf("new generation exited with %d:\n%s\n", exited.ExitCode, exited.StderrTail)
	case errors.Is(err, baton.ErrReadyTimeout):
		fmt.Println("new generation never became ready; it was killed")
	case err != nil:
		fmt.Println("upgrade failed:", err)
	}
	// Output:
	// binary missing or not executable; still serving
}

// The app hands a state blob to its successor: bounded and checksummed.
func ExampleOptions_stateFunc() {
	var counter int
	upg, err := baton.New(baton.Options{
		UpgradeSignal: baton.NoSignal,
		StateFunc: func() ([]byte, error) {
			return []byte(fmt.Sprint(counter)), nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	if prev := upg.State(); prev != nil {
		fmt.Sscan(string(prev), &counter)
	}
	fmt.Println("counter starts at", counter)
	// Output: counter starts at 0
}
