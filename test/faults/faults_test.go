//go:build linux

package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/test/faults/rig"
)

// TestFaultsShort runs a few representative cases of the matrix (make
// faults runs them all): a refused binary, a release that crashes before
// it is ready under baton run, concurrent upgrades, a corrupt state blob
// given to a real new generation, and malformed control messages. Each
// must PASS.
func TestFaultsShort(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs real services under load")
	}
	all := Targets()
	targets := map[string]rig.Target{}
	for _, n := range []string{"baton", "hello-v1", "hello-v2", "badapp-exit"} {
		targets[n] = all[n]
	}
	env, err := rig.NewEnv(targets)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	want := []struct {
		name string
		mode rig.Mode
	}{
		{"bad binary", rig.Library},
		{"crash before ready", rig.Run},
		{"concurrent upgrades", rig.Library},
		{"corrupt state (checksum)", rig.Library},
		{"malformed control messages", rig.Library},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var rows []Row
	for _, w := range want {
		var c *Case
		for _, cc := range Cases() {
			if cc.Name == w.name {
				c = &cc
			}
		}
		if c == nil {
			t.Fatalf("no case %q", w.name)
		}
		row := RunCase(ctx, env, *c, w.mode)
		rows = append(rows, row)
		if !row.Pass {
			t.Errorf("%s (%s): expected %s; observed %s; failed requests %s\n%s", row.Case, row.Mode, row.Expected, row.Observed, row.Failed, row.Log)
		}
	}
	var b strings.Builder
	PrintTable(&b, rows)
	t.Logf("\n%s", b.String())
}
