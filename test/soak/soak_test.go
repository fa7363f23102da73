//go:build linux

package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/test/faults/rig"
)

// TestSoakShort is make soak with 50 upgrades per mode: no failed request,
// no old generation left, the figures of the last 12 upgrades within
// their bounds of the first 12, and under baton run the supervisor's
// goroutines among them.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs real services under load")
	}
	env, err := rig.NewEnv(Targets())
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i, mode := range []rig.Mode{rig.Library, rig.Run} {
		res, err := Run(ctx, env, Config{Mode: mode, Upgrades: 50}, "soakt"+string(rune('a'+i)))
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		var b strings.Builder
		Print(&b, res)
		t.Logf("\n%s", b.String())
		if mode == rig.Run && (res.First["sup goroutines"] <= 0 || res.Last["sup goroutines"] <= 0) {
			t.Errorf("%s: the supervisor's goroutines were not read from its metrics: first %v, last %v", mode, res.First["sup goroutines"], res.Last["sup goroutines"])
		}
		if res.Failed() {
			t.Errorf("%s: failed requests %d, old generations left %d, grew: %v", mode, res.Load.TotalFailed(), res.Left, res.Violations)
		}
	}
}
