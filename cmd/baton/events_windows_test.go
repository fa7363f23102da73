package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/testenv"
	"github.com/baton-go/baton/internal/wine"
	"golang.org/x/sys/windows/svc/eventlog"
)

type entry struct {
	typ  string
	id   uint32
	text string
}

// sink records what would go to the Event Log, and passes it on to next
// when set.
type sink struct {
	mu      sync.Mutex
	entries []entry
	errs    []error
	next    eventSink
}

func (s *sink) add(typ string, id uint32, text string, write func(uint32, string) error) error {
	var err error
	if write != nil {
		err = write(id, text)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = append(s.entries, entry{typ, id, text})
	if err != nil {
		s.errs = append(s.errs, err)
	}
	return err
}

func (s *sink) Info(id uint32, text string) error {
	var w func(uint32, string) error
	if s.next != nil {
		w = s.next.Info
	}
	return s.add("info", id, text, w)
}

func (s *sink) Warning(id uint32, text string) error {
	var w func(uint32, string) error
	if s.next != nil {
		w = s.next.Warning
	}
	return s.add("warning", id, text, w)
}

func (s *sink) Error(id uint32, text string) error {
	var w func(uint32, string) error
	if s.next != nil {
		w = s.next.Error
	}
	return s.add("error", id, text, w)
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// forward runs forwardEvents into s while records are written, and
// checks that each new one arrived once, with its id and type.
func forward(t *testing.T, s *sink) {
	path := events.Path(testenv.TempDir(t), "web")
	l, err := events.Open(path, "web", "supervisor", 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Emit(events.Record{Name: events.Serving, PID: 1, Generation: 1}) // an earlier run's: not forwarded
	ctx, cancel := context.WithCancel(context.Background())
	done := forwardEvents(ctx, s, path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	want := []entry{
		{"info", 100, "upgrade started"},
		{"info", 101, "generation 2 (pid 12) started"},
		{"info", 104, "generation 2 (pid 12) took over"},
		{"warning", 106, "baton.upgrade_failed"},
		{"error", 111, "baton.gave_up"},
	}
	recs := []events.Record{
		{Name: events.UpgradeStarted, PID: 11, Generation: 1, Message: "upgrade started"},
		{Name: events.Started, PID: 12, Generation: 2, Message: "generation 2 (pid 12) started", Duration: 0.003},
		{Name: events.Switched, PID: 12, Generation: 2, Message: "generation 2 (pid 12) took over"},
		{Name: events.UpgradeFailed, Error: "exit code 1"},
		{Name: events.GaveUp, Error: "it keeps crashing"},
	}
	for i, r := range recs[:4] {
		l.Emit(r)
		deadline := time.Now().Add(30 * time.Second)
		for s.count() < i+1 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	// The last one written as the service stops: forwarded all the same.
	l.Emit(recs[4])
	cancel()
	<-done
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.entries) != len(want) {
		t.Fatalf("%d entries written, want %d: %+v", len(s.entries), len(want), s.entries)
	}
	for i, w := range want {
		got := s.entries[i]
		if got.typ != w.typ || got.id != w.id || len(got.text) < len(w.text) || got.text[:len(w.text)] != w.text {
			t.Errorf("entry %d: %s %d %q, want %s %d %q...", i, got.typ, got.id, got.text, w.typ, w.id, w.text)
		}
	}
}

func TestForwardEventsToTheEventLog(t *testing.T) {
	forward(t, &sink{})
}

// The real Event Log: a source registered, the records written through
// it without error. It runs in the Wine lane (make test-windows: Wine's
// user may register a source). It does not read the entries back: under
// Wine ReportEventW succeeds but keeps nothing and ReadEventLogW is a stub
// that reads no record, so what Event Viewer shows needs real Windows to
// be checked (docs/events.md).
func TestForwardEventsToTheRealEventLog(t *testing.T) {
	src := fmt.Sprintf("batontest%d", os.Getpid())
	if err := eventlog.InstallAsEventCreate(src, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil {
		testenv.Missing(t, fmt.Sprintf("registering an event source needs an administrator: %v", err))
	}
	defer eventlog.Remove(src)
	el, err := eventlog.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer el.Close()
	s := &sink{next: el}
	forward(t, s)
	if len(s.errs) > 0 {
		t.Errorf("writing to the Event Log: %v", s.errs)
	}
	if v, ok := wine.Version(); ok {
		t.Logf("Wine %s: %d entries written through ReportEventW; Wine keeps none to read back", v, len(s.entries))
	}
}
