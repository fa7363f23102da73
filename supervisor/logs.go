package supervisor

import (
	"fmt"
	"github.com/baton-go/baton/internal/contract"
	"io"
	"os"
	"strings"
	"sync"
)

// lineWriter is the one writer of the generations' output: whole lines,
// tagged by the caller, to the supervisor's stdout or a rotating file, and
// into a ring of recent lines that `baton logs` reads.
type lineWriter struct {
	mu   sync.Mutex
	w    io.Writer
	ring []LogLine
	next int64 // sequence number of the next line
	max  int
}

// LogLine is one line of a generation's output.
type LogLine = contract.LogLine

const ringLines = 2000

func newLineWriter(w io.Writer) *lineWriter { return &lineWriter{w: w, max: ringLines} }

func (l *lineWriter) WriteLine(s string) {
	s = strings.TrimRight(s, "\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.w, s+"\n")
	l.ring = append(l.ring, LogLine{Seq: l.next, Text: s})
	l.next++
	if len(l.ring) > l.max {
		l.ring = append(l.ring[:0], l.ring[len(l.ring)-l.max:]...)
	}
}

// Since returns the lines with Seq >= since (at most the ring), and the
// sequence number to ask for next. since < 0 means the last -since lines.
func (l *lineWriter) Since(since int64) ([]LogLine, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if since < 0 {
		since = max(0, l.next+since)
	}
	var out []LogLine
	for _, ln := range l.ring {
		if ln.Seq >= since {
			out = append(out, ln)
		}
	}
	return out, l.next
}

// rotatingFile appends to a file and, when it would grow past maxSize,
// renames it to PATH.1 (PATH.1 to PATH.2, ... keeping keep old files) and
// starts a new one.
type rotatingFile struct {
	path    string
	maxSize int64
	keep    int
	f       *os.File
	size    int64
}

func openRotating(path string, maxSize int64, keep int) (*rotatingFile, error) {
	r := &rotatingFile{path: path, maxSize: maxSize, keep: keep}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *rotatingFile) open() error {
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	r.f, r.size = f, fi.Size()
	return nil
}

func (r *rotatingFile) Write(p []byte) (int, error) {
	if r.maxSize > 0 && r.size > 0 && r.size+int64(len(p)) > r.maxSize {
		r.rotate()
	}
	n, err := r.f.Write(p)
	r.size += int64(n)
	return n, err
}

func (r *rotatingFile) rotate() {
	r.Close()
	for i := r.keep; i >= 1; i-- {
		from := r.path
		if i > 1 {
			from = fmt.Sprintf("%s.%d", r.path, i-1)
		}
		os.Rename(from, fmt.Sprintf("%s.%d", r.path, i))
	}
	if r.keep == 0 {
		os.Remove(r.path)
	}
	if err := r.open(); err != nil {
		// Keep logging somewhere rather than nowhere.
		r.f, r.size = os.Stderr, 0
	}
}

func (r *rotatingFile) Close() error {
	if r.f == os.Stderr {
		return nil // the fallback after a failed reopen: not ours to close
	}
	return r.f.Close()
}

// reopen closes the log file and opens it again at its path (after an
// outside tool moved it away); without a log file it does nothing.
func (l *lineWriter) reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.w.(*rotatingFile)
	if !ok {
		return nil
	}
	r.Close()
	if err := r.open(); err != nil {
		r.f, r.size = os.Stderr, 0 // keep logging somewhere rather than nowhere
		return err
	}
	return nil
}
