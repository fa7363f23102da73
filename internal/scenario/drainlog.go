package scenario

import (
	"bufio"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proctest"
)

// startLoad starts the run's load on addr.
func startLoad(ctx context.Context, addr string, cfg Config) (*loadgen.Load, error) {
	return loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: cfg.Workers, MaxRequests: 5_000_000,
		Pause: cfg.Pause, Stagger: cfg.Stagger})
}

// warmup lets the load run before the first upgrade.
func warmup(cfg Config) {
	d := cfg.Warmup
	if d <= 0 {
		d = 500 * time.Millisecond
	}
	time.Sleep(d)
}

// drainLog fills in each upgrade's drain figures from hello's log (every
// generation writes to it, log/slog's text format): the old generation's
// "handed over; draining" line is its drain start, its "drained" line
// says how long the drain took and how many connections it passed on, and
// the tracker knows when the process was gone.
func drainLog(path string, ups []Upgrade, tracker *proctest.Tracker) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	type drain struct {
		start    time.Time
		took     time.Duration
		migrated int
		drained  bool
	}
	byPID := map[int]*drain{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		kv := logFields(sc.Text())
		if kv["app"] != "hello" {
			continue
		}
		pid, err := strconv.Atoi(kv["pid"])
		if err != nil {
			continue
		}
		d := byPID[pid]
		if d == nil {
			d = &drain{}
			byPID[pid] = d
		}
		switch kv["msg"] {
		case "handed over; draining":
			if t, err := time.Parse(time.RFC3339Nano, kv["time"]); err == nil {
				d.start = t
			}
		case "drained":
			d.drained = true
			d.took, _ = time.ParseDuration(kv["took"])
			d.migrated, _ = strconv.Atoi(kv["migrated"])
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		return err
	}
	for i := range ups {
		u := &ups[i]
		u.Migrated = -1
		d := byPID[u.OldPID]
		if d == nil {
			continue
		}
		if d.drained {
			u.Migrated, u.DrainDone = d.migrated, d.took
		}
		if !d.start.IsZero() {
			u.DrainStart = d.start
			if ex, ok := tracker.Exited(u.OldPID); ok {
				u.DrainExit = ex.At.Sub(d.start)
			}
		}
	}
	return nil
}

// logFields splits one log/slog text line into its keys and values
// (quoted values unquoted); a "[gen N pid P] " prefix (baton run's, on
// its generations' lines) is skipped.
func logFields(line string) map[string]string {
	kv := map[string]string{}
	if strings.HasPrefix(line, "[") {
		if i := strings.Index(line, "] "); i >= 0 {
			line = line[i+2:]
		}
	}
	for line != "" {
		line = strings.TrimLeft(line, " ")
		eq := strings.IndexByte(line, '=')
		if eq <= 0 {
			break
		}
		key := line[:eq]
		line = line[eq+1:]
		var val string
		if strings.HasPrefix(line, `"`) {
			q, err := strconv.QuotedPrefix(line)
			if err != nil {
				break
			}
			val, _ = strconv.Unquote(q)
			line = line[len(q):]
		} else if sp := strings.IndexByte(line, ' '); sp >= 0 {
			val, line = line[:sp], line[sp:]
		} else {
			val, line = line, ""
		}
		kv[key] = val
	}
	return kv
}
