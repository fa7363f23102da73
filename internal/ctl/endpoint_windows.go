package ctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/winpipe"
)

// On Windows the control endpoint is the named pipe \\.\pipe\baton-<name>
// (see internal/winpipe for the listener). Access is decided by the pipe's
// DACL (winpipe.OwnerOnlySDDL), which admits only the user running the
// service, SYSTEM and the Administrators group: the system refuses everyone
// else when they open the pipe, before any byte reaches us. Remote clients
// are refused as well (PIPE_REJECT_REMOTE_CLIENTS).
//
// On the wire the protocol is the one of protocol.go, except that the
// service first writes one space into each connection it accepts (the
// greeting of winpipe); dial consumes it. A script that talks to the pipe
// directly sees it in front of the response line, where JSON allows it.

// Address returns where the endpoint called name lives.
func Address(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	return `\\.\pipe\baton-` + name, nil
}

// Dir returns the directory for baton's own runtime files on Windows
// (the supervisor's working files; control endpoints are named pipes, not
// files): $BATON_RUNTIME_DIR when set, else a "baton" directory under this
// user's temporary directory.
func Dir() string {
	if d := os.Getenv(contract.EnvRuntimeDir); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "baton")
}

// Remove is a no-op on Windows: a pipe disappears with its last handle.
func Remove(name string) error { return nil }

// Listen creates the control endpoint for name: a named pipe listener whose
// first instance exists when Listen returns. Clients that open it before the
// first Accept wait for that Accept, so call Listen when about to Serve.
// Several listeners of the same name may coexist, in one process or in
// several (the old and the new generation during a handover); a client
// reaches any of them, and one whose instance is closed unaccepted by a
// stopping listener tries again (see winpipe.Listen). If another user's
// service holds the name, Listen fails with an error wrapping ErrNameInUse.
func Listen(name string) (net.Listener, error) {
	path, err := Address(name)
	if err != nil {
		return nil, err
	}
	sddl, err := winpipe.OwnerOnlySDDL()
	if err != nil {
		return nil, fmt.Errorf("control endpoint: %w", err)
	}
	l, err := winpipe.Listen(path, sddl)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			// The pipe exists and its DACL (set by whoever created its
			// first instance) does not let us add instances: another
			// user's service owns the name.
			return nil, fmt.Errorf("%w (%w)", ErrNameInUse, err)
		}
		return nil, fmt.Errorf("control endpoint: %w", err)
	}
	return l, nil
}

// ListenerSDDL returns the owner and DACL of a listener made by Listen, read
// back from the pipe, in SDDL form. It is meant for tests and diagnostics.
func ListenerSDDL(ln net.Listener) (string, error) {
	l, ok := ln.(*winpipe.Listener)
	if !ok {
		return "", fmt.Errorf("ListenerSDDL: %T is not a control pipe listener", ln)
	}
	return l.SDDL()
}

// dial connects to the service called name. winpipe.Dial retries for a
// moment while the pipe is busy or absent: during a handover the old
// generation may have stopped taking connections a moment before the new
// one offers its first instance, or all instances may be taken. The
// server is admitted only when it runs as our user, SYSTEM or an elevated
// administrator (checkServer): a pipe name is first come, first served,
// and another user's process could have made the first instance.
func dial(ctx context.Context, name string) (net.Conn, Peer, error) {
	path, err := Address(name)
	if err != nil {
		return nil, Peer{}, err
	}
	c, err := winpipe.Dial(ctx, path)
	switch {
	case err == nil:
		peer, err := checkServer(c, path)
		if err != nil {
			c.Close()
			return nil, Peer{}, err
		}
		return c, peer, nil
	case errors.Is(err, winpipe.ErrNotFound):
		if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
			return nil, Peer{}, fmt.Errorf("%w: %q (%s): %w", ErrNoEndpoint, name, path, cerr)
		}
		return nil, Peer{}, fmt.Errorf("%w: %q (%s)", ErrNoEndpoint, name, path)
	case errors.Is(err, os.ErrPermission):
		return nil, Peer{}, fmt.Errorf("connecting to %q (the service runs as another user): %w", name, err)
	}
	return nil, Peer{}, fmt.Errorf("connecting to %q: %w", name, err)
}

// checkServer admits the server end of a client connection when the
// process serving it (GetNamedPipeServerProcessId, told by the system)
// runs as our user, as SYSTEM, or elevated as an administrator: the
// principals the pipe's DACL admits (winpipe.OwnerOnlySDDL).
func checkServer(c net.Conn, path string) (Peer, error) {
	pid, err := winpipe.ServerPID(c)
	if err != nil {
		return Peer{}, fmt.Errorf("%w: identifying the server of %s: %v", ErrPeerRefused, path, err)
	}
	if err := trustedProcess(pid); err != nil {
		return Peer{}, fmt.Errorf("%w: the server of %s (pid %d) %v: not our service (another user's pipe?)", ErrPeerRefused, path, pid, err)
	}
	return Peer{PID: int(pid)}, nil
}

// checkPeer admits the server end of our own pipe connections. The DACL of
// the pipe is the gate (the system refuses other users when they open it);
// this only makes sure the connection is one of ours and has a client.
func checkPeer(c net.Conn) error {
	if _, err := winpipe.ClientPID(c); err != nil {
		return fmt.Errorf("%w: identifying the pipe client: %v", ErrPeerRefused, err)
	}
	return nil
}
