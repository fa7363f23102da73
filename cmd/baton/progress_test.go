package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/testenv"
)

func TestProgressOfAnUpgrade(t *testing.T) {
	start := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	ms := func(n float64) time.Time { return start.Add(time.Duration(n * float64(time.Millisecond))) }
	var b bytes.Buffer
	p := newProgress(&b, "web", start)
	recs := []events.Record{
		// Before the request, and another operation's drain: not ours.
		{Time: ms(-500), Name: events.UpgradeStarted, Deployment: "old", Operation: "upgrade", PID: 9, Generation: 1},
		{Time: ms(1), Name: events.Drained, Deployment: "old", Operation: "upgrade", PID: 9, Generation: 1, Duration: 0.2},
		{Time: ms(2), Name: events.UpgradeStarted, Deployment: "d1", Operation: "upgrade", PID: 10, Generation: 2},
		{Time: ms(5), Name: events.Started, Deployment: "d1", Operation: "upgrade", PID: 11, Generation: 3, Duration: 0.003},
		{Time: ms(40), Name: events.Ready, Deployment: "d1", Operation: "upgrade", PID: 11, Generation: 3, Duration: 0.035},
		{Time: ms(40.2), Name: events.Switched, Deployment: "d1", Operation: "upgrade", PID: 11, Generation: 3, Duration: 0.0002},
		{Time: ms(40.2), Name: events.Switched, Deployment: "d1", Operation: "upgrade", PID: 11, Generation: 3, Duration: 0.0002}, // read twice (catch-up)
		{Time: ms(41), Name: events.UpgradeStarted, Deployment: "d2", Operation: "upgrade", PID: 11, Generation: 3},               // the next one: not ours
	}
	for _, r := range recs {
		p.record(r)
	}
	if !p.waits() {
		t.Error("it does not wait for the old generation's drain")
	}
	p.record(events.Record{Time: ms(1250), Name: events.Drained, Deployment: "d1", Operation: "upgrade", PID: 10, Generation: 2, Duration: 1.21})
	if p.waits() {
		t.Error("it waits after the old generation drained")
	}
	want := `upgrading web: generation 2 (pid 10) serves
       +5ms  starting     generation 3 (pid 11)
      +40ms  ready        generation 3 (pid 11), 35ms after its start
    +40.2ms  handed over  to generation 3 (pid 11) (handover 200µs); the old generation drains
     +1.25s  old drained  generation 2 (pid 10) drained in 1.21s
`
	if b.String() != want {
		t.Errorf("progress:\n%s\nwant:\n%s", b.String(), want)
	}
}

// Follow may take its starting point after the upgrade's first record
// was written (it starts in a goroutine of its own): the first step it
// sees then has the records before it read from the file, so that the
// "upgrading" line still comes first (an e2e run printed "starting"
// before it).
func TestProgressReadsWhatFollowMissed(t *testing.T) {
	start := time.Now().Add(-time.Second)
	path := events.Path(testenv.TempDir(t), "web") // t.TempDir's clean-up fails under Wine
	log, err := events.Open(path, "web", "supervisor", 0)
	if err != nil {
		t.Fatal(err)
	}
	upgrade := events.Record{Time: start.Add(2 * time.Millisecond), Name: events.UpgradeStarted, Deployment: "d1", Operation: "upgrade", PID: 10, Generation: 2}
	started := events.Record{Time: start.Add(5 * time.Millisecond), Name: events.Started, Deployment: "d1", Operation: "upgrade", PID: 11, Generation: 3, Duration: 0.003}
	for _, r := range []events.Record{upgrade, started} {
		if err := log.Emit(r); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	pw := &progressWatch{p: newProgress(&b, "web", start), path: path, changed: make(chan struct{}, 1)}
	pw.feed(started) // what Follow saw first
	pw.catchUp()     // and finish reads the file again
	want := `upgrading web: generation 2 (pid 10) serves
       +5ms  starting     generation 3 (pid 11)
`
	if b.String() != want {
		t.Errorf("progress:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestProgressOfAFailedUpgrade(t *testing.T) {
	start := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return start.Add(time.Duration(n) * time.Millisecond) }
	var b bytes.Buffer
	p := newProgress(&b, "web", start)
	for _, r := range []events.Record{
		{Time: ms(1), Name: events.UpgradeStarted, Deployment: "d1", Operation: "upgrade", PID: 10, Generation: 2},
		{Time: ms(4), Name: events.Started, Deployment: "d1", Operation: "upgrade", PID: 11, Generation: 3, Duration: 0.003},
		{Time: ms(30), Name: events.StartFailed, Deployment: "d1", Operation: "upgrade", PID: 11, Generation: 3, ErrorType: "child_exited", Error: "exit code 1\nboom"},
		{Time: ms(31), Name: events.UpgradeFailed, Deployment: "d1", Operation: "upgrade", ErrorType: "child_exited", Error: "exit code 1\nboom", Duration: 0.03},
	} {
		p.record(r)
	}
	if p.waits() {
		t.Error("a failed upgrade waits for a drain")
	}
	for _, want := range []string{"starting     generation 3 (pid 11)", "failed       generation 3 (pid 11): child_exited", "the upgrade failed after 30ms: child_exited"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("progress without %q:\n%s", want, b.String())
		}
	}
}

// Progress is for terminals only: a pipe or a file is not one.
func TestIsTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if isTerminal(w) || isTerminal(&bytes.Buffer{}) {
		t.Error("a pipe or a buffer taken for a terminal")
	}
	f, err := os.Create(filepath.Join(testenv.TempDir(t), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Error("a file taken for a terminal")
	}
}
