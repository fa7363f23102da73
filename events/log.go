package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
)

// Log appends records to one service's events file. It is safe for
// concurrent use, and several processes may append to the same file (the
// generations of a library service): each record is one write under an
// advisory lock, which also covers the rotation.
type Log struct {
	service, source string
	w               *fileWriter
	h               slog.Handler
}

// Open returns a Log that appends to path (created 0600, its directory
// 0700), rotating it into path.1 when it would grow past maxBytes (0:
// DefaultMaxBytes). service and source fill the records' service.name and
// baton.source when they are empty.
func Open(path, service, source string, maxBytes int64) (*Log, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("events directory: %w", err)
	}
	w := &fileWriter{path: path, max: maxBytes}
	// Fail now, not at the first event, if the file cannot be written.
	f, err := openAppend(path)
	if err != nil {
		return nil, fmt.Errorf("events file: %w", err)
	}
	f.Close()
	return &Log{service: service, source: source, w: w, h: slog.NewJSONHandler(w, nil)}, nil
}

// Path is the file the log appends to.
func (l *Log) Path() string { return l.w.path }

// Emit appends r (its Time, or now when zero).
func (l *Log) Emit(r Record) error {
	if r.Service == "" {
		r.Service = l.service
	}
	if r.Source == "" {
		r.Source = l.source
	}
	level := slog.LevelInfo
	if r.Error != "" {
		level = slog.LevelWarn
	}
	if r.Time.IsZero() {
		r.Time = timeNow()
	}
	msg := r.Message
	if msg == "" {
		msg = r.Name
	}
	rec := slog.NewRecord(r.Time, level, msg, 0)
	rec.AddAttrs(slog.String("event.name", r.Name), slog.String("service.name", r.Service))
	str := func(k, v string) {
		if v != "" {
			rec.AddAttrs(slog.String(k, v))
		}
	}
	num := func(k string, v int) {
		if v != 0 {
			rec.AddAttrs(slog.Int(k, v))
		}
	}
	str("deployment.id", r.Deployment)
	str("baton.operation", r.Operation)
	str("baton.source", r.Source)
	num("process.pid", r.PID)
	num("baton.generation", r.Generation)
	str("baton.generation.state", r.State)
	str("baton.generation.reason", r.Reason)
	str("process.executable.path", r.Binary)
	if r.Duration != 0 {
		rec.AddAttrs(slog.Float64("baton.duration_s", r.Duration))
	}
	str("error.type", r.ErrorType)
	str("error.message", r.Error)
	return l.h.Handle(context.Background(), rec)
}

// fileWriter appends each Write (one record: slog's JSON handler writes a
// whole line at once) to the file, opened for that write: another process
// may have rotated it meanwhile.
type fileWriter struct {
	path string
	max  int64
	mu   sync.Mutex
}

func (w *fileWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, err := openAppend(w.path)
	if err != nil {
		return 0, err
	}
	defer func() { f.Close() }()
	if err := lockFile(f); err != nil {
		return 0, fmt.Errorf("locking %s: %w", w.path, err)
	}
	// Under the lock: is this still the file at path (not rotated by
	// another process between our open and our lock)?
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if !stillAt(f, w.path) {
		f.Close()
		if f, err = openAppend(w.path); err != nil {
			return 0, err
		}
		if err := lockFile(f); err != nil {
			return 0, err
		}
		if fi, err = f.Stat(); err != nil {
			return 0, err
		}
	}
	if fi.Size() > 0 && fi.Size()+int64(len(p)) > w.max {
		if err := os.Rename(w.path, w.path+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("rotating %s: %w", w.path, err)
		}
		old := f
		if f, err = openAppend(w.path); err != nil {
			old.Close()
			return 0, err
		}
		old.Close() // releases its lock; the new file is locked below
		if err := lockFile(f); err != nil {
			return 0, err
		}
	}
	return f.Write(p)
}

// stillAt reports whether path names the open file f (ids read from
// handles: see fileID).
func stillAt(f *os.File, path string) bool {
	id, err := idOf(f)
	if err != nil {
		return false
	}
	g, err := openRead(path)
	if err != nil {
		return false
	}
	defer g.Close()
	at, err := idOf(g)
	return err == nil && at == id
}
