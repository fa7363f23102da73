package httpdrain

import (
	"bufio"
	"io"
	"net"
	"net/http"
)

// responseWriter adds "Connection: close" to the response header when the
// header is sent while draining. Checking at send time (rather than when
// the handler starts) also covers handlers that were already running when
// the drain began.
type responseWriter struct {
	http.ResponseWriter
	s        *Server
	done     bool          // the final header was sent (or the conn hijacked)
	twoPhase bool          // HTTP/2 conn ended by the two-phase GOAWAY (http2.go)
	mc       *migratedConn // an HTTP/1.x conn the drain may pass on (migrate.go)
}

// beforeHeader is called before anything that may send the header with the
// given status code.
func (w *responseWriter) beforeHeader(code int) {
	if w.done {
		return
	}
	if code >= 100 && code <= 199 {
		// Informational (103 Early Hints, 101 for an upgrade): the header
		// is sent as is and stays writable; the final response comes later.
		return
	}
	w.done = true
	if w.s.draining.Load() && !w.twoPhase && !(w.mc != nil && w.s.migrating() && w.mc.keepsAlive()) {
		// (A conn the drain passes on once idle stays open: its client
		// goes on with the next server without reconnecting.)
		// net/http closes the conn after such a response (HTTP/1) or
		// starts a graceful shutdown with GOAWAY (HTTP/2 conns that
		// httpdrain could not wrap).
		w.ResponseWriter.Header().Set("Connection", "close")
	}
}

func (w *responseWriter) WriteHeader(code int) {
	w.beforeHeader(code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	w.beforeHeader(http.StatusOK)
	return w.ResponseWriter.Write(p)
}

func (w *responseWriter) WriteString(str string) (int, error) {
	w.beforeHeader(http.StatusOK)
	return io.WriteString(w.ResponseWriter, str)
}

// ReadFrom keeps net/http's sendfile/splice path for io.Copy.
func (w *responseWriter) ReadFrom(r io.Reader) (int64, error) {
	w.beforeHeader(http.StatusOK)
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{w.ResponseWriter}, r)
}

// writerOnly hides any ReadFrom method, so io.Copy does not loop back.
type writerOnly struct{ io.Writer }

func (w *responseWriter) Flush() { w.FlushError() }

// FlushError is used by http.ResponseController; unlike Flush it reports
// errors.
func (w *responseWriter) FlushError() error {
	w.beforeHeader(http.StatusOK)
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack works during a drain too; register the conn with Server.Hijacked.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.done = true
	}
	return c, rw, err
}

func (w *responseWriter) Push(target string, opts *http.PushOptions) error {
	if p, ok := w.ResponseWriter.(http.Pusher); ok {
		return p.Push(target, opts)
	}
	return http.ErrNotSupported
}

// CloseNotify delegates to the deprecated http.CloseNotifier, which some
// frameworks still assert unconditionally.
func (w *responseWriter) CloseNotify() <-chan bool {
	if cn, ok := w.ResponseWriter.(http.CloseNotifier); ok {
		return cn.CloseNotify()
	}
	return nil // never fires
}

// Unwrap lets http.ResponseController reach the underlying writer
// (deadlines, full duplex).
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
