package canary_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/baton-go/baton/internal/canary"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/proxy"
)

// A canary release that answers 500 is caught in its first step and put
// back to weight 0; the stable generation takes all traffic again.
func ExampleRollout() {
	stable := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	defer stable.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "broken release", http.StatusInternalServerError)
	}))
	defer broken.Close()

	set := proxy.NewSet(proxy.SetOptions{})
	setShare := func(p int) error { // what the supervisor does
		return set.SetBackends([]proxy.Backend{
			{ID: "gen-1", Network: "tcp", Addr: stable.Listener.Addr().String(), Weight: 100 - p},
			{ID: "gen-2", Network: "tcp", Addr: broken.Listener.Addr().String(), Weight: p},
		})
	}
	if err := setShare(0); err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	p := proxy.NewHTTP(set, proxy.HTTPOptions{Logger: slog.New(slog.DiscardHandler)})
	go p.Serve(ln)
	defer p.Shutdown(context.Background())

	// Clients, until the rollout is over.
	done := make(chan struct{})
	go func() {
		for range 100_000 {
			select {
			case <-done:
				return
			default:
			}
			if resp, err := http.Get("http://" + ln.Addr().String() + "/"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()

	steps, _ := canary.ParseSteps("10,50,100")
	ro := &canary.Rollout{
		Stable: "gen-1", Canary: "gen-2",
		SetShare: setShare, Stats: set.Stats,
		Steps: steps, StepInterval: 200 * time.Millisecond,
		Thresholds: canary.Thresholds{MaxErrorRatio: 0.05, MaxP99Ratio: 1.5, MinRequests: 10},
		Logger:     slog.New(slog.DiscardHandler),
	}
	_, err = ro.Run(context.Background())
	close(done)

	var failed *canary.FailedError
	if errors.As(err, &failed) {
		fmt.Printf("%s at step %d (%d%%), check %s\n", contract.CodeOf(err), failed.Step+1, failed.Percent, failed.Verdict.Check)
	}
	st := set.Stats()
	fmt.Println("weights now: gen-1", st["gen-1"].Weight, "gen-2", st["gen-2"].Weight)
	// Output:
	// canary_failed at step 1 (10%), check error_ratio
	// weights now: gen-1 100 gen-2 0
}

// Judging one comparison: the canary's figures against the stable
// generation's over the same span.
func ExampleJudge() {
	var stable, canaryStats proxy.BackendStats
	stable.Requests, stable.Errors5xx = 900, 9 // 1% errors
	canaryStats.Requests, canaryStats.Errors5xx = 100, 4
	for range 900 {
		stable.Latency.Add(20 * time.Millisecond)
	}
	for range 100 {
		canaryStats.Latency.Add(25 * time.Millisecond)
	}
	v := canary.Judge(canaryStats, stable, canary.Thresholds{MaxErrorRatio: 0.02, MaxP99Ratio: 1.5})
	fmt.Println(v)
	// Output:
	// fail (error_ratio): canary 100 requests, 4 errors (4.00%) vs stable 900 requests, 9 errors (1.00%, step) (max 3.00%, at least 100 requests); p99 25ms vs stable 21ms (max 31ms)
}

func ExampleParseSteps() {
	steps, err := canary.ParseSteps("1,10,50,100")
	fmt.Println(steps, err)
	_, err = canary.ParseSteps("10,5")
	fmt.Println(err)
	// Output:
	// [1 10 50 100] <nil>
	// canary: invalid plan: step 2 (5%) does not raise the share of step 1 (10%) (in "10,5")
}
