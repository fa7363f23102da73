package baton

import (
	"bytes"
	"io"
	"os"
	"strconv"

	"github.com/baton-go/baton/internal/atomicfile"
)

// writePIDFile replaces path atomically, so a reader never sees an empty
// or half-written PID file.
func writePIDFile(path string) error {
	return atomicfile.Write(path, 0o644, func(w io.Writer) error {
		_, err := io.WriteString(w, strconv.Itoa(os.Getpid())+"\n")
		return err
	})
}

// removePIDFile removes path if it still names this process.
func removePIDFile(path string) {
	b, err := os.ReadFile(path)
	if err == nil && string(bytes.TrimSpace(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(path)
	}
}
