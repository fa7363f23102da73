//go:build unix

package ctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/unixsock"
)

// Dir returns the directory that holds the control sockets of this user:
// $BATON_RUNTIME_DIR when set, else $XDG_RUNTIME_DIR/baton, else /run/baton
// for root, else a per-uid directory under the system temporary directory.
func Dir() string {
	if d := os.Getenv(contract.EnvRuntimeDir); d != "" {
		return d
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "baton")
	}
	if os.Geteuid() == 0 {
		return "/run/baton"
	}
	return filepath.Join(os.TempDir(), "baton-"+strconv.Itoa(os.Geteuid()))
}

// Address returns where the endpoint called name lives.
func Address(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	p := filepath.Join(Dir(), name+".sock")
	// sun_path is 104 bytes on the BSDs and 108 on Linux.
	if len(p) >= 104 {
		return "", fmt.Errorf("control socket path %q is too long for a unix socket (max 103 bytes); set %s to a shorter directory", p, contract.EnvRuntimeDir)
	}
	return p, nil
}

// ensureDir creates the runtime directory 0700 or checks that an existing
// one belongs to us and is not writable by others, reached through names
// only we or root can change (secureDir): a socket in a directory another
// user controls could be swapped for theirs.
func ensureDir(dir string) error { return secureDir(dir, true) }

// Listen creates the control endpoint for name. A socket file left behind by
// a dead service is replaced; one that still answers yields ErrNameInUse.
// The returned listener never unlinks the file on Close (the socket may live
// on in the next generation); call Remove when the service is gone for good.
func Listen(name string) (net.Listener, error) {
	path, err := Address(name)
	if err != nil {
		return nil, err
	}
	if err := ensureDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	switch st, perr := unixsock.Probe(path); st {
	case unixsock.Live:
		return nil, fmt.Errorf("%w: %s", ErrNameInUse, path)
	case unixsock.Unknown:
		return nil, fmt.Errorf("control socket %s exists and cannot be probed (%v); remove it if no service owns it", path, perr)
	case unixsock.Stale, unixsock.NotSocket:
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale control socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control endpoint: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	// The directory is already 0700; 0600 on the socket keeps it private even
	// if someone later loosens the directory.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("control endpoint: %w", err)
	}
	return ln, nil
}

// Remove deletes the socket file of the endpoint called name.
func Remove(name string) error {
	path, err := Address(name)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// dial connects to the service called name, after the same directory
// checks as Listen's (a client that follows another user's link talks to
// whoever that user chose), and admits the server only when it runs as
// our user or root (checkServer).
func dial(ctx context.Context, name string) (net.Conn, Peer, error) {
	path, err := Address(name)
	if err != nil {
		return nil, Peer{}, err
	}
	if err := secureDir(filepath.Dir(path), false); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, Peer{}, fmt.Errorf("%w: %q (%s: %v)", ErrNoEndpoint, name, path, err)
		}
		return nil, Peer{}, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, Peer{}, fmt.Errorf("%w: %q (%s)", ErrNoEndpoint, name, path)
		}
		return nil, Peer{}, fmt.Errorf("connecting to %q: %w", name, err)
	}
	peer, err := checkServer(c, path)
	if err != nil {
		c.Close()
		return nil, Peer{}, err
	}
	return c, peer, nil
}

// checkServer admits the server end of a connection only when it runs as
// our user or root (SO_PEERCRED, LOCAL_PEERCRED: the credentials of the
// process that made the listening socket, which the kernel records; a
// process cannot claim another's).
func checkServer(c net.Conn, path string) (Peer, error) {
	cred, err := connCred(c)
	if err != nil {
		return Peer{}, fmt.Errorf("%w: reading the credentials of the server at %s: %v", ErrPeerRefused, path, err)
	}
	if cred.uid != os.Geteuid() && cred.uid != 0 {
		return Peer{}, fmt.Errorf("%w: the server at %s runs as uid %d, neither us (uid %d) nor root: not our service (another user's socket?)", ErrPeerRefused, path, cred.uid, os.Geteuid())
	}
	return Peer{PID: cred.pid}, nil
}

// connCred reads the peer credentials of a unix socket connection.
func connCred(c net.Conn) (peerCred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peerCred{}, fmt.Errorf("not a unix socket connection (%T)", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peerCred{}, err
	}
	var cred peerCred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = peerCredOf(int(fd)) }); err != nil {
		return peerCred{}, err
	}
	return cred, cerr
}

// checkPeer admits our own user and root: the socket mode already keeps
// others out, this also covers a directory whose permissions were changed.
func checkPeer(c net.Conn) error {
	cred, err := connCred(c)
	if err != nil {
		return fmt.Errorf("%w: reading peer credentials: %v", ErrPeerRefused, err)
	}
	if cred.uid != os.Geteuid() && cred.uid != 0 {
		return fmt.Errorf("%w: peer uid %d is neither the service owner (uid %d) nor root", ErrPeerRefused, cred.uid, os.Geteuid())
	}
	return nil
}
