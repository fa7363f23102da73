package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/baton-go/baton/internal/proxy"
)

// Two generations of an app on private loopback ports, weighted 3:1
// behind one public port.
func ExampleHTTPProxy() {
	gen := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, name)
		}))
	}
	blue, green := gen("blue"), gen("green")
	defer blue.Close()
	defer green.Close()

	set := proxy.NewSet(proxy.SetOptions{})
	err := set.SetBackends([]proxy.Backend{
		{ID: "gen-1", Network: "tcp", Addr: blue.Listener.Addr().String(), Weight: 75},
		{ID: "gen-2", Network: "tcp", Addr: green.Listener.Addr().String(), Weight: 25},
	})
	if err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	p := proxy.NewHTTP(set, proxy.HTTPOptions{})
	go p.Serve(ln)
	defer p.Shutdown(context.Background())

	var answers []string
	for range 4 {
		resp, err := http.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers = append(answers, string(body))
	}
	fmt.Println(strings.Join(answers, " "))
	st := set.Stats()
	fmt.Println("gen-1:", st["gen-1"].Requests, "gen-2:", st["gen-2"].Requests)
	// Output:
	// blue blue green blue
	// gen-1: 3 gen-2: 1
}

// Judging one step of a canary rollout: the figures counted between two
// snapshots.
func ExampleBackendStats_Sub() {
	set := proxy.NewSet(proxy.SetOptions{})
	_ = set.SetBackends([]proxy.Backend{{ID: "canary", Network: "tcp", Addr: "127.0.0.1:9", Weight: 10}})
	before := set.Stats()["canary"]
	// ... the step's traffic flows (here: none) ...
	step := set.Stats()["canary"].Sub(before)
	fmt.Printf("requests %d, error ratio %.2f, p99 %v\n", step.Requests, step.ErrorRatio(), step.P99().Round(time.Millisecond))
	// Output: requests 0, error ratio 0.00, p99 0s
}
