package events

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/testenv"
)

func TestEmitAndRead(t *testing.T) {
	path := Path(testenv.TempDir(t), "web")
	l, err := Open(path, "web", "supervisor", 0)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	in := []Record{
		{Time: at, Name: UpgradeStarted, Deployment: "d1", Operation: "upgrade", PID: 10, Generation: 1},
		{Time: at.Add(time.Second), Name: Ready, Deployment: "d1", PID: 11, Generation: 2, Duration: 0.25, Reason: "upgrade"},
		{Time: at.Add(2 * time.Second), Name: UpgradeFailed, Deployment: "d2", ErrorType: "child_exited", Error: "exit code 3"},
	}
	for _, r := range in {
		if err := l.Emit(r); err != nil {
			t.Fatal(err)
		}
	}
	out, skipped, err := ReadFile(path)
	if err != nil || skipped != 0 || len(out) != len(in) {
		t.Fatalf("read %d records (%d skipped, %v), want %d", len(out), skipped, err, len(in))
	}
	for i := range in {
		want := in[i]
		want.Service, want.Source = "web", "supervisor"
		got := out[i]
		if !got.Time.Equal(want.Time) || got.Name != want.Name || got.Deployment != want.Deployment || got.PID != want.PID ||
			got.Generation != want.Generation || got.Duration != want.Duration || got.Service != "web" || got.Source != "supervisor" ||
			got.ErrorType != want.ErrorType || got.Error != want.Error || got.Reason != want.Reason {
			t.Errorf("record %d: got %+v, want %+v", i, got, want)
		}
	}
	if out[1].Took() != 250*time.Millisecond {
		t.Errorf("Took %v", out[1].Took())
	}
	if out[2].Level != "WARN" || out[0].Level != "INFO" {
		t.Errorf("levels %q %q", out[0].Level, out[2].Level)
	}
}

// Two writers (as two generations would be) append to one file, which
// stays within its bound: every line a whole record, the newest kept.
func TestBoundedAndSharedByWriters(t *testing.T) {
	path := Path(testenv.TempDir(t), "web")
	const max = 16 << 10
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		l, err := Open(path, "web", "library", max)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 400; i++ {
				if err := l.Emit(Record{Name: Drained, PID: 100 + w, Generation: i, Message: fmt.Sprintf("writer %d record %d", w, i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	recs, skipped, err := ReadFile(path)
	if err != nil || skipped != 0 {
		t.Fatalf("read: %v, %d lines skipped (torn records)", err, skipped)
	}
	var total int64
	for _, p := range []string{path, path + ".1"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > max {
			t.Errorf("%s is %d bytes, over the bound %d", filepath.Base(p), fi.Size(), max)
		}
		total += fi.Size()
	}
	// Each writer's records in order; the newest record of all kept.
	last := map[int]int{100: -1, 101: -1}
	for _, r := range recs {
		if r.Generation <= last[r.PID] {
			t.Fatalf("writer %d: record %d after %d", r.PID, r.Generation, last[r.PID])
		}
		last[r.PID] = r.Generation
	}
	if last[100] != 399 && last[101] != 399 {
		t.Errorf("the newest records were not kept: %v", last)
	}
	t.Logf("%d records kept in %d bytes", len(recs), total)
}

func TestFollowAcrossRotation(t *testing.T) {
	path := Path(testenv.TempDir(t), "web")
	l, err := Open(path, "web", "supervisor", 2<<10)
	if err != nil {
		t.Fatal(err)
	}
	l.Emit(Record{Name: Started, Generation: -1}) // before Follow: not reported
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make(chan Record, 1000)
	done := make(chan error, 1)
	go func() { done <- Follow(ctx, path, 5*time.Millisecond, func(r Record) { got <- r }) }()
	// Let Follow take its starting point: it reports what is appended
	// after it started, so wait until it reports a first marker.
	for seen := false; !seen; {
		l.Emit(Record{Name: Serving, Generation: 0})
		select {
		case r := <-got:
			seen = r.Generation == 0
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Each record is followed before the next is written (events are
	// rare): across several rotations of a 2 KiB file, none is lost.
	for i := 1; i <= 40; i++ {
		l.Emit(Record{Name: Started, Generation: i})
		for {
			var r Record
			select {
			case r = <-got:
			case <-ctx.Done():
				t.Fatalf("record %d never followed", i)
			}
			if r.Generation == 0 {
				continue // a late marker
			}
			if r.Generation != i {
				t.Fatalf("followed record %d, want %d", r.Generation, i)
			}
			break
		}
	}
	if _, err := os.Stat(path + ".1"); err != nil {
		t.Fatalf("the file never rotated: %v", err)
	}
	cancel()
	<-done
}
