package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
)

// eventsDirs are the runtime directories where the events of the service
// name may be kept, the first one where a service started now would keep
// them: with BATON_RUNTIME_DIR, that directory only; else a library
// service's (ctl.Dir: %TEMP%\baton), baton run's (%LOCALAPPDATA%\baton,
// where it keeps its generations' copies) and the Windows service's
// (%ProgramData%\baton\NAME\run).
func eventsDirs(name string) []string {
	if d := os.Getenv(contract.EnvRuntimeDir); d != "" {
		return []string{d}
	}
	dirs := []string{ctl.Dir()}
	if d, err := os.UserCacheDir(); err == nil {
		dirs = append(dirs, filepath.Join(d, "baton"))
	}
	return append(dirs, filepath.Join(serviceDir(name), "run"))
}

// eventSink is where forwardEvents writes: an *eventlog.Log.
type eventSink interface {
	Info(eid uint32, msg string) error
	Warning(eid uint32, msg string) error
	Error(eid uint32, msg string) error
}

// forwardEvents starts writing every lifecycle record appended to the
// events file at path from now on (the ones there already, of earlier
// runs, are not) to the Windows Event Log (eventLogEntry), until ctx ends;
// done is closed once the last records are written. A write error is
// logged once; forwarding goes on.
func forwardEvents(ctx context.Context, el eventSink, path string, log *slog.Logger) (done <-chan struct{}) {
	already, _, _ := events.ReadFile(path)
	since := time.Now()
	warned := false
	d := make(chan struct{})
	go func() {
		defer close(d)
		tailEvents(ctx, path, 250*time.Millisecond, since, already, func(r events.Record) {
			id, typ, text := eventLogEntry(r)
			var err error
			switch typ {
			case "error":
				err = el.Error(id, text)
			case "warning":
				err = el.Warning(id, text)
			default:
				err = el.Info(id, text)
			}
			if err != nil && !warned {
				warned = true
				log.Warn("cannot write lifecycle records to the Event Log", "err", err)
			}
		})
	}()
	return d
}
