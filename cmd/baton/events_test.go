package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/testenv"
)

// tailEvents reports every record once: those appended before Follow took
// its starting point (the catch-up) and those after.
func TestTailEventsReportsEachRecordOnce(t *testing.T) {
	path := events.Path(testenv.TempDir(t), "web")
	l, err := events.Open(path, "web", "supervisor", 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Emit(events.Record{Name: events.Serving, Generation: 1, PID: 10})
	already, _, err := events.ReadFile(path)
	if err != nil || len(already) != 1 {
		t.Fatalf("%d records, %v", len(already), err)
	}
	// Appended after the caller read the file, before Follow starts:
	// only the catch-up can report them.
	l.Emit(events.Record{Name: events.UpgradeStarted, Generation: 1, PID: 10, Deployment: "d1"})
	l.Emit(events.Record{Name: events.Started, Generation: 2, PID: 11, Deployment: "d1"})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan events.Record, 16)
	done := make(chan error, 1)
	go func() {
		done <- tailEvents(ctx, path, 5*time.Millisecond, time.Time{}, already, func(r events.Record) { got <- r })
	}()
	next := func() events.Record {
		t.Helper()
		select {
		case r := <-got:
			return r
		case <-ctx.Done():
			t.Fatal("a record was never reported")
		}
		return events.Record{}
	}
	seen := map[string]int{}
	for i := 0; i < 2; i++ {
		seen[next().Name]++
	}
	// Appended while it follows.
	l.Emit(events.Record{Name: events.Ready, Generation: 2, PID: 11, Deployment: "d1"})
	l.Emit(events.Record{Name: events.Switched, Generation: 2, PID: 11, Deployment: "d1"})
	for i := 0; i < 2; i++ {
		seen[next().Name]++
	}
	// A marker: once it is reported, anything reported twice would have come before.
	l.Emit(events.Record{Name: events.Drained, Generation: 1, PID: 10, Deployment: "d1"})
	for r := next(); r.Name != events.Drained; r = next() {
		seen[r.Name]++
	}
	cancel()
	<-done
	for _, n := range []string{events.UpgradeStarted, events.Started, events.Ready, events.Switched} {
		if seen[n] != 1 {
			t.Errorf("%s reported %d times", n, seen[n])
		}
	}
	if seen[events.Serving] != 0 {
		t.Errorf("a record the caller had already was reported again")
	}
}

func TestEventPrinter(t *testing.T) {
	r := events.Record{Time: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC), Name: events.StartFailed, Service: "web",
		Deployment: "0123456789abcdef", Operation: "upgrade", PID: 4242, Generation: 7, Duration: 0.0123,
		Message: "generation_failed: generation 7 (pid 4242)", ErrorType: "child_exited", Error: "exit code 1\nlast stderr: boom"}
	var b bytes.Buffer
	p := eventPrinter{w: &b}
	p.header()
	p.print(r)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "generation_failed") || !strings.Contains(lines[1], " 7 ") ||
		!strings.Contains(lines[1], "4242") || !strings.Contains(lines[1], "01234567 ") || !strings.Contains(lines[1], "12.3ms") ||
		!strings.HasSuffix(lines[1], "generation_failed: generation 7 (pid 4242): exit code 1 …") {
		t.Errorf("table:\n%s", b.String())
	}
	if strings.Index(lines[0], "TOOK")+4 != strings.Index(lines[1], "12.3ms")+6 {
		t.Errorf("columns do not line up:\n%s", b.String())
	}
	b.Reset()
	eventPrinter{w: &b, json: true}.print(r)
	var back events.Record
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || back.Name != r.Name || back.Duration != r.Duration || back.Error != r.Error ||
		!strings.Contains(b.String(), `"event.name":"baton.generation_failed"`) || !strings.Contains(b.String(), `"baton.duration_s":0.0123`) {
		t.Errorf("json: %v %s", err, b.String())
	}
}

func TestEventLogEntry(t *testing.T) {
	ids := map[uint32]string{}
	for name, id := range eventLogIDs {
		if other, dup := ids[id]; dup {
			t.Errorf("%s and %s share the Event Log id %d", name, other, id)
		}
		ids[id] = name
		if id <= 3 || id == eventLogOther {
			t.Errorf("%s has id %d, taken by the service's log lines or by unknown records", name, id)
		}
	}
	r := events.Record{Time: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC), Name: events.Switched, Service: "web",
		Message: "generation 3 (pid 42) took over", PID: 42, Generation: 3, Duration: 0.0002}
	id, typ, text := eventLogEntry(r)
	if id != 104 || typ != "info" || !strings.HasPrefix(text, "generation 3 (pid 42) took over\r\n\r\n{") ||
		!strings.Contains(text, `"event.name":"baton.switched"`) || !strings.Contains(text, `"baton.duration_s":0.0002`) {
		t.Errorf("switched: %d %s %q", id, typ, text)
	}
	if id, typ, _ := eventLogEntry(events.Record{Name: events.UpgradeFailed, Error: "boom", Level: "WARN"}); id != 106 || typ != "warning" {
		t.Errorf("upgrade_failed: %d %s", id, typ)
	}
	if id, typ, _ := eventLogEntry(events.Record{Name: events.GaveUp, Error: "boom"}); id != 111 || typ != "error" {
		t.Errorf("gave_up: %d %s", id, typ)
	}
	if id, _, _ := eventLogEntry(events.Record{Name: "baton.something_new"}); id != eventLogOther {
		t.Errorf("an unknown record: id %d", id)
	}
}
