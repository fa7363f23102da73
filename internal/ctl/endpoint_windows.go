package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/windows"
)

// On Windows the control endpoint is the named pipe \\.\pipe\baton-<name>
// (see pipe_windows.go for the listener). Access is decided by the pipe's
// DACL, which admits only the user running the service, SYSTEM and the
// Administrators group: the system refuses everyone else when they open the
// pipe, before any byte reaches us. Remote clients are refused as well
// (PIPE_REJECT_REMOTE_CLIENTS).
//
// On the wire the protocol is the one of protocol.go, except that the
// service first writes one space into each connection it accepts (see
// greeting in pipe_windows.go); dial consumes it. A script that talks to the
// pipe directly sees it in front of the response line, where JSON allows it.

// How long dial keeps retrying. During a handover the old generation may have
// stopped taking connections a moment before the new one offers its first
// instance (the name is absent), or all instances may be taken (busy).
const (
	dialBusyWait   = 3 * time.Second
	dialAbsentWait = 1 * time.Second
)

// Address returns where the endpoint called name lives.
func Address(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	return `\\.\pipe\baton-` + name, nil
}

// Remove is a no-op on Windows: a pipe disappears with its last handle.
func Remove(name string) error { return nil }

// endpointSDDL is the security descriptor of the control pipe: owned by the
// user running this process, with a protected DACL (nothing inherited)
// granting full access to that user, to SYSTEM and to the Administrators
// group, and to nobody else. Full access includes FILE_CREATE_PIPE_INSTANCE,
// which the next generation of the service needs to add its own instances;
// everyone else can neither connect nor squat on the name while we hold it.
func endpointSDDL() (string, error) {
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return "", fmt.Errorf("reading the user of this process: %w", err)
	}
	sid := tu.User.Sid.String()
	if sid == "" {
		return "", errors.New("reading the user of this process: cannot format its SID")
	}
	dacl := "(A;;FA;;;" + sid + ")"
	if sid != "S-1-5-18" { // a service running as LocalSystem needs one ACE only
		dacl += "(A;;FA;;;SY)"
	}
	dacl += "(A;;FA;;;BA)"
	return "O:" + sid + "D:P" + dacl, nil
}

// Listen creates the control endpoint for name: a named pipe listener whose
// first instance exists when Listen returns. Clients that open it before the
// first Accept wait for that Accept, so call Listen when about to Serve.
// Several listeners of the same name may coexist, in one process or in
// several (the old and the new generation during a handover); a client
// reaches any of them, and one whose instance is closed unaccepted by a
// stopping listener tries again (see greeting). If another user's service
// holds the name, Listen fails with an error wrapping ErrNameInUse.
func Listen(name string) (net.Listener, error) {
	path, err := Address(name)
	if err != nil {
		return nil, err
	}
	sddl, err := endpointSDDL()
	if err != nil {
		return nil, fmt.Errorf("control endpoint: %w", err)
	}
	return listenPipe(path, sddl)
}

// ListenerSDDL returns the owner and DACL of a listener made by Listen, read
// back from the pipe, in SDDL form. It is meant for tests and diagnostics.
func ListenerSDDL(ln net.Listener) (string, error) {
	l, ok := ln.(*pipeListener)
	if !ok {
		return "", fmt.Errorf("ListenerSDDL: %T is not a control pipe listener", ln)
	}
	return l.SDDL()
}

func dial(ctx context.Context, name string) (net.Conn, error) {
	path, err := Address(name)
	if err != nil {
		return nil, err
	}
	path16, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	delay := 5 * time.Millisecond
	for {
		// SECURITY_IDENTIFICATION: the service may identify us but never
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
				return nil, fmt.Errorf("connecting to %q (%s): %w", name, path, err)
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
			return nil, fmt.Errorf("connecting to %q (%s): %w: the service runs as another user (%v)", name, path, os.ErrPermission, err)
		default:
			return nil, fmt.Errorf("connecting to %q (%s): %w", name, path, err)
		}
		left := limit - time.Since(start)
		if left <= 0 {
			if absent {
				return nil, fmt.Errorf("%w: %q (%s)", ErrNoEndpoint, name, path)
			}
			return nil, fmt.Errorf("connecting to %q (%s): no free pipe instance for %v (is the service stopping?): %w", name, path, limit, err)
		}
		t := time.NewTimer(min(delay, left))
		select {
		case <-ctx.Done():
			t.Stop()
			if absent {
				return nil, fmt.Errorf("%w: %q (%s): %w", ErrNoEndpoint, name, path, ctx.Err())
			}
			return nil, fmt.Errorf("connecting to %q (%s): %w", name, path, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

var errDropped = errors.New("pipe instance closed before it was accepted")

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
		return fmt.Errorf("not a baton control endpoint (it sent %q first)", b[0])
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, windows.ERROR_NO_DATA), errors.Is(err, windows.ERROR_PIPE_NOT_CONNECTED):
		return errDropped
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return err
}

// checkPeer admits the server end of our own pipe connections. The DACL of
// the pipe is the gate (the system refuses other users when they open it);
// this only makes sure the connection is one of ours and has a client.
func checkPeer(c net.Conn) error {
	pc, ok := c.(*pipeConn)
	if !ok || !pc.server {
		return fmt.Errorf("%w: not a control pipe connection (%T)", ErrPeerRefused, c)
	}
	if _, err := pc.clientPID(); err != nil {
		return fmt.Errorf("%w: identifying the pipe client: %v", ErrPeerRefused, err)
	}
	return nil
}
