package metrics_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/baton-go/baton"
	"github.com/baton-go/baton/metrics"
)

// A library service serves its baton metrics on a handler of its own (on
// a listener from the Upgrader, so that the next generation takes the
// scrape address over). Here an upgrade to a binary that does not exist
// fails, and the scrape says so.
func ExampleHandler() {
	up, err := baton.New(baton.Options{UpgradeSignal: baton.NoSignal, Binary: "/nonexistent/app"})
	if err != nil {
		log.Fatal(err)
	}
	defer up.Stop()
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(up))
	if err := up.Ready(); err != nil {
		log.Fatal(err)
	}
	_, err = up.Upgrade(context.Background())
	fmt.Println("upgrade failed:", err != nil)

	srv := httptest.NewServer(mux) // (in a service: http.Serve(ln, mux) with ln from up.Listen)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "baton_upgrades_total") || strings.HasPrefix(l, "baton_last_upgrade_successful ") || strings.HasPrefix(l, "baton_generation ") {
			fmt.Println(l)
		}
	}
	// Output:
	// upgrade failed: true
	// baton_generation 1
	// baton_last_upgrade_successful 0
	// baton_upgrades_total{result="failure"} 1
	// baton_upgrades_total{result="rolled_back"} 0
	// baton_upgrades_total{result="success"} 0
}
