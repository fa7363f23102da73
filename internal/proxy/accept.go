package proxy

import (
	"errors"
	"log/slog"
	"net"
	"time"
)

// acceptBackoff is how the Serve loops treat Accept errors: a timeout or
// a temporary error (out of file descriptors: EMFILE, ENFILE; an aborted
// connection) is waited out with a growing pause, as net/http's server
// does; any other error ends the loop. Returning on EMFILE would stop
// the proxy for good while its listener stays open and clients hang.
type acceptBackoff struct {
	delay time.Duration
}

// wait pauses and reports true when err is worth another Accept; false
// when the loop must end with err.
func (a *acceptBackoff) wait(err error, log *slog.Logger) bool {
	var ne net.Error
	if !(errors.As(err, &ne) && ne.Timeout() || isTemporary(err)) {
		return false
	}
	a.delay = min(max(2*a.delay, 5*time.Millisecond), time.Second)
	log.Debug("proxy: accept", "err", err, "retry in", a.delay)
	time.Sleep(a.delay)
	return true
}

// reset is called after each accepted connection.
func (a *acceptBackoff) reset() { a.delay = 0 }

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
