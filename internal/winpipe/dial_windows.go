package winpipe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/windows"
)

// ErrNotFound means no pipe of that path exists: nothing listens there.
var ErrNotFound = errors.New("named pipe not found")

// How long Dial keeps retrying. During a handover the old generation may have
// stopped taking connections a moment before the new one offers its first
// instance (the name is absent), or all instances may be taken (busy).
const (
	dialBusyWait   = 3 * time.Second
	dialAbsentWait = 1 * time.Second
)

// dialDropped counts connections that Dial saw dropped before the greeting
// (and retried); tests look at it.
var dialDropped atomic.Int64

var errDropped = errors.New("pipe instance closed before it was accepted")

// Dial connects to the pipe at path and returns once a listener has
// accepted the connection (it waits for the greeting, which it consumes).
// While the pipe is busy (all instances taken) or the instance it opened is
// closed unaccepted by a stopping listener, it retries for up to about 3 s;
// while the pipe is absent, for up to about 1 s; ctx bounds both, and the
// wait for the greeting. When nothing listens, the error wraps ErrNotFound
// (and ctx.Err() if ctx ended the wait); when the pipe's security
// descriptor refuses this process, it wraps os.ErrPermission. Errors are
// *net.OpError.
func Dial(ctx context.Context, path string) (net.Conn, error) {
	path16, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return nil, dialErr(path, err)
	}
	start := time.Now()
	delay := 5 * time.Millisecond
	for {
		// SECURITY_IDENTIFICATION: the server may identify us but never
		// act as us.
		h, err := windows.CreateFile(path16,
			windows.GENERIC_READ|windows.GENERIC_WRITE, 0, nil, windows.OPEN_EXISTING,
			windows.FILE_FLAG_OVERLAPPED|windows.SECURITY_SQOS_PRESENT|windows.SECURITY_IDENTIFICATION, 0)
		if err == nil {
			c := newPipeConn(h, path, false)
			err = awaitGreeting(ctx, c)
			if err == nil {
				return c, nil
			}
			c.Close()
			if !errors.Is(err, errDropped) {
				return nil, dialErr(path, err)
			}
			dialDropped.Add(1)
			// Something was listening a moment ago: the retry budget
			// starts again from here.
			start = time.Now()
		}
		var limit time.Duration
		absent := false
		switch {
		case errors.Is(err, errDropped):
			// The listener closed the instance before accepting us: the
			// request was not sent, try another instance.
			limit = dialBusyWait
		case errors.Is(err, windows.ERROR_FILE_NOT_FOUND):
			absent, limit = true, dialAbsentWait
		case errors.Is(err, windows.ERROR_PIPE_BUSY):
			limit = dialBusyWait
		case errors.Is(err, windows.ERROR_ACCESS_DENIED):
			// The pipe's DACL does not admit us (typically: it belongs to
			// another user).
			return nil, dialErr(path, fmt.Errorf("%w (%w)", os.ErrPermission, err))
		default:
			return nil, dialErr(path, err)
		}
		left := limit - time.Since(start)
		if left <= 0 {
			if absent {
				return nil, dialErr(path, ErrNotFound)
			}
			return nil, dialErr(path, fmt.Errorf("no free pipe instance for %v (is the listener stopping?): %w", limit, err))
		}
		t := time.NewTimer(min(delay, left))
		select {
		case <-ctx.Done():
			t.Stop()
			if absent {
				return nil, dialErr(path, fmt.Errorf("%w: %w", ErrNotFound, ctx.Err()))
			}
			return nil, dialErr(path, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

func dialErr(path string, err error) error {
	return &net.OpError{Op: "dial", Net: "pipe", Addr: pipeAddr(path), Err: err}
}

// awaitGreeting waits until the server accepts c (see greeting), as long as
// ctx allows. It returns errDropped if the pipe breaks first.
func awaitGreeting(ctx context.Context, c *pipeConn) error {
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	if !stop() {
		return ctx.Err()
	}
	switch {
	case err == nil && b[0] == greeting:
		return c.SetReadDeadline(time.Time{})
	case err == nil:
		return fmt.Errorf("not a winpipe listener (it sent %q first)", b[0])
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, windows.ERROR_NO_DATA), errors.Is(err, windows.ERROR_PIPE_NOT_CONNECTED):
		return errDropped
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return err
}
