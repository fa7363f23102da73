// The fake HAProxy listens on a unix socket, as HAProxy does: Unix only.

//go:build unix

package haproxy

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// A stand-in runtime API answers here; with HAProxy, pass the path of its
// "stats socket ... level admin" (or its TCP address).
func Example() {
	dir, _ := os.MkdirTemp("", "haproxy-example")
	defer os.RemoveAll(dir)
	stat, _ := os.ReadFile("testdata/show-stat-2.6.csv")
	f, _ := startFake(dir, func(cmd string) string {
		if strings.HasPrefix(cmd, "show stat") {
			return string(stat)
		}
		return "\n" // a set command that worked
	})
	defer f.close()

	ctx := context.Background()
	lb, err := New("unix:" + f.addr())
	if err != nil {
		fmt.Println(err)
		return
	}
	servers, err := lb.Servers(ctx, "app")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range servers {
		fmt.Printf("%-8s %-9s weight %3d sessions %d healthy %v\n", s.Name, s.Status, s.Weight, s.Sessions, s.Healthy())
	}
	// Ten percent of the new requests to sick: refused, it fails its checks.
	fmt.Println(lb.Canary(ctx, "app", "blue", "sick", 10))
	fmt.Println(lb.SetWeight(ctx, "app", "green", 0))
	// Output:
	// blue     DRAIN     weight 100 sessions 0 healthy true
	// green    MAINT     weight   0 sessions 0 healthy false
	// sick     UP 4/5    weight   1 sessions 0 healthy false
	// nocheck  no check  weight   1 sessions 0 healthy false
	// canary app/sick at 10%: haproxy: server unhealthy: app/sick is UP 4/5 (check L7STS Layer7 wrong status)
	// <nil>
}
