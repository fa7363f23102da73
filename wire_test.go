package baton

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestStatusWireCarriesEveryField: the public Status and the control
// protocol's document say the same thing, field for field (a field added
// to one and forgotten in wire() reads as zero in `baton status`).
func TestStatusWireCarriesEveryField(t *testing.T) {
	now := time.Unix(1700000000, 0).UTC()
	s := Status{
		Name: "n", PID: 1, Generation: 2, Phase: "serving", Binary: "/b", StartedAt: now, ReadyAt: &now,
		Uptime: time.Second, Listeners: []string{"tcp 127.0.0.1:1"}, OpenHandles: 3, Draining: []int{4},
		ParentPID: 5, ConnsTaken: 6,
		Last:     &UpgradeOutcome{At: now, OK: true, Result: &UpgradeResult{PID: 7, Generation: 8}},
		Counters: Counters{UpgradesSucceeded: 9, UpgradesFailed: 10, UpgradesRolledBack: 11, Restarts: 12, DrainsForced: 13},
	}
	// Every field of the public type set above (a new one must be added
	// here, and to wire()).
	v := reflect.ValueOf(s)
	for i := 0; i < v.NumField(); i++ {
		if v.Field(i).IsZero() {
			t.Fatalf("the test leaves Status.%s unset: set it, and carry it in wire()", v.Type().Field(i).Name)
		}
	}
	pub, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	wire, err := json.Marshal(s.wire())
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	if err := json.Unmarshal(pub, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(wire, &b); err != nil {
		t.Fatal(err)
	}
	for k, va := range a {
		if vb, ok := b[k]; !ok || !reflect.DeepEqual(va, vb) {
			t.Errorf("%s: public %v, on the wire %v", k, va, vb)
		}
	}
}
