package winpipe

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// A named pipe listener built on x/sys only (the package comment says why
// not go-winio).
//
// How it works. The listener always owns one pipe instance that is not yet
// connected ("pending"); the first one is created by Listen, so a client
// finds the name from then on and waits until Accept takes it. Accept waits
// for a client on that instance with an overlapped ConnectNamedPipe whose
// completion is signalled through an event of our own, waiting on that event
// and on the listener's close event together (WaitForMultipleObjects).
//
// The pending instance is deliberately NOT associated with the Go runtime's
// I/O completion port while it waits: a handle that is on no port posts its
// completions nowhere, so our event-driven operation can never be delivered
// to the runtime's poller (the notes of this project record a runtime crash
// when foreign completions reached it). Once a client is connected the
// instance is wrapped with os.NewFile: Go >= 1.25 detects the overlapped
// handle, associates it with the runtime's port, and so gives Read/Write
// that do not block a thread, plus working deadlines. The next instance is
// created right then; an instance is never reused after it went on the
// runtime's port (closing the conn closes it). All of this works under Wine
// 8.0 as it does on Windows.
//
// Several listeners, in this process or in others, may hold instances of the
// same name at once (the old and the new generation during a handover): no
// FILE_FLAG_FIRST_PIPE_INSTANCE. A client reaches any listening instance.
// The greeting (below) makes a listener's Close harmless to a client that
// had just opened one of its instances.

const (
	pipeBufSize = 64 << 10
	// closeCancelWait bounds how long Close waits for a cancelled
	// ConnectNamedPipe to report its completion (it does so at once in
	// practice; the bound only keeps Close from hanging on a broken system).
	closeCancelWait = 5 * time.Second
	// greetWait bounds the write of the greeting (it goes into the pipe's
	// buffer at once unless the client is gone).
	greetWait = 5 * time.Second
)

// greeting is the byte the server writes into every connection it accepts,
// before anything else. A client that opened an instance cannot otherwise
// tell "accepted, request lost" from "the listener closed this instance
// before accepting it" (which happens when a generation stops while clients
// keep coming): Dial waits for this byte, and retries on another instance
// when the pipe breaks before it, which is safe because nothing was read.
// It is a space so that a script that does not know about it still parses
// the response of a JSON protocol (such as baton's control endpoint): JSON
// allows leading white space.
const greeting = ' '

// pipeAddr is the address of both ends of a pipe: its path.
type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return string(a) }

// Listener is a named pipe listener made by Listen; it implements
// net.Listener. Its methods may be called from several goroutines.
type Listener struct {
	path   string
	path16 *uint16
	sd     *windows.SECURITY_DESCRIPTOR // kept alive for sa
	sa     *windows.SecurityAttributes

	// acceptMu serializes Accept and owns connEv and ov while held.
	acceptMu sync.Mutex
	connEv   windows.Handle // manual-reset event of the pending ConnectNamedPipe
	ov       *windows.Overlapped

	closeEv   windows.Handle // manual-reset, set once by Close
	closeOnce sync.Once

	// mu guards pending and closed. Lock order: acceptMu, then mu.
	mu      sync.Mutex
	pending windows.Handle // instance waiting for a client, or InvalidHandle
	closed  bool
}

// leakedOverlapped keeps alive the OVERLAPPED of a connect that could not
// be cancelled in time, so that the system never writes into freed memory.
var leakedOverlapped struct {
	sync.Mutex
	ovs []*windows.Overlapped
}

// Listen creates a named pipe listener at path (such as `\\.\pipe\name`),
// protected by the security descriptor written in sddl (see OwnerOnlySDDL).
// The first instance of the pipe exists when Listen returns: clients that
// open it before the first Accept wait for that Accept, so call Listen when
// about to accept. Several listeners of the same path may coexist, in one
// process or in several (the old and the new generation during a handover);
// a client reaches any of them, and one whose instance is closed unaccepted
// by a stopping listener tries again (see greeting). If the pipe exists
// under a security descriptor that does not let this process add instances
// (another user's listener holds the name), the error satisfies
// errors.Is(err, os.ErrPermission).
func Listen(path, sddl string) (*Listener, error) {
	path16, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return nil, err
	}
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return nil, fmt.Errorf("named pipe %s: security descriptor %q: %w", path, sddl, err)
	}
	l := &Listener{
		path:    path,
		path16:  path16,
		sd:      sd,
		pending: windows.InvalidHandle,
		ov:      new(windows.Overlapped),
	}
	l.sa = &windows.SecurityAttributes{SecurityDescriptor: sd, InheritHandle: 0}
	l.sa.Length = uint32(unsafe.Sizeof(*l.sa))
	if l.connEv, err = windows.CreateEvent(nil, 1, 0, nil); err != nil {
		return nil, fmt.Errorf("named pipe %s: CreateEvent: %w", path, err)
	}
	if l.closeEv, err = windows.CreateEvent(nil, 1, 0, nil); err != nil {
		windows.CloseHandle(l.connEv)
		return nil, fmt.Errorf("named pipe %s: CreateEvent: %w", path, err)
	}
	// The first instance exists before Listen returns: from now on clients
	// find the name (they connect and wait until Accept takes them).
	h, err := l.createInstance()
	if err != nil {
		windows.CloseHandle(l.connEv)
		windows.CloseHandle(l.closeEv)
		return nil, err
	}
	l.pending = h
	// On Windows the first instance's security descriptor governs the whole
	// pipe: if someone else created the name first (with a DACL of their
	// choosing), our instances would quietly live under it. Insist that
	// the pipe is owned as we asked.
	if err := l.checkOwner(sd); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// checkOwner compares the owner of the pipe with the owner in want.
func (l *Listener) checkOwner(want *windows.SECURITY_DESCRIPTOR) error {
	wantOwner, _, err := want.Owner()
	if err != nil || wantOwner == nil {
		return nil // no owner asked for: nothing to compare
	}
	got, err := l.securityDescriptor()
	if err != nil {
		return fmt.Errorf("named pipe %s: reading back its security descriptor: %w", l.path, err)
	}
	owner, _, err := got.Owner()
	if err != nil || owner == nil || !owner.Equals(wantOwner) {
		return fmt.Errorf("named pipe %s: the name is held by a pipe owned by %v, not by us (%v): %w", l.path, owner, wantOwner, os.ErrPermission)
	}
	return nil
}

func (l *Listener) createInstance() (windows.Handle, error) {
	h, err := windows.CreateNamedPipe(l.path16,
		windows.PIPE_ACCESS_DUPLEX|windows.FILE_FLAG_OVERLAPPED,
		windows.PIPE_TYPE_BYTE|windows.PIPE_READMODE_BYTE|windows.PIPE_WAIT|windows.PIPE_REJECT_REMOTE_CLIENTS,
		windows.PIPE_UNLIMITED_INSTANCES, pipeBufSize, pipeBufSize, 0, l.sa)
	if err != nil {
		if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
			// The pipe exists and its DACL (set by whoever created its first
			// instance) does not let us add instances: another user's
			// listener owns the name. The error satisfies
			// errors.Is(err, os.ErrPermission) (so says the Errno).
			return windows.InvalidHandle, fmt.Errorf("named pipe %s: cannot add an instance, the pipe belongs to someone else: %w", l.path, err)
		}
		return windows.InvalidHandle, fmt.Errorf("named pipe %s: CreateNamedPipe: %w", l.path, err)
	}
	return h, nil
}

func (l *Listener) Addr() net.Addr { return pipeAddr(l.path) }

func (l *Listener) opErr(err error) error {
	return &net.OpError{Op: "accept", Net: "pipe", Addr: pipeAddr(l.path), Err: err}
}

// Accept waits for the next client and returns the server end of its
// connection, once the greeting is written into it. After Close it returns
// an error that satisfies errors.Is(err, net.ErrClosed).
func (l *Listener) Accept() (net.Conn, error) {
	l.acceptMu.Lock()
	defer l.acceptMu.Unlock()
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, l.opErr(net.ErrClosed)
		}
		if l.pending == windows.InvalidHandle {
			// The last attempt to create the next instance failed.
			h, err := l.createInstance()
			if err != nil {
				l.mu.Unlock()
				return nil, l.opErr(err)
			}
			l.pending = h
		}
		h := l.pending
		l.mu.Unlock()

		err := l.connect(h)
		if err != nil {
			// Closed, or this instance is unusable (typically ERROR_NO_DATA:
			// a client connected and went away already). Drop it at once
			// (the sooner a closing listener's instance goes, the fewer
			// clients open it only to retry elsewhere).
			l.mu.Lock()
			if l.pending == h {
				windows.CloseHandle(h)
				l.pending = windows.InvalidHandle
			}
			l.mu.Unlock()
			if errors.Is(err, windows.ERROR_NO_DATA) {
				continue
			}
			return nil, l.opErr(err)
		}

		// Connected: the instance now belongs to the conn.
		l.mu.Lock()
		l.pending = windows.InvalidHandle
		if !l.closed {
			// Ignore a failure here: the next Accept retries and reports it.
			if next, err := l.createInstance(); err == nil {
				l.pending = next
			}
		}
		l.mu.Unlock()
		c := newPipeConn(h, l.path, true)
		c.SetWriteDeadline(time.Now().Add(greetWait))
		if _, err := c.Write([]byte{greeting}); err != nil {
			c.Close() // the client is gone already
			continue
		}
		c.SetWriteDeadline(time.Time{})
		return c, nil
	}
}

// connect waits until a client is connected to h. It returns an error
// wrapping net.ErrClosed when the listener was closed first. The caller
// holds acceptMu.
func (l *Listener) connect(h windows.Handle) error {
	*l.ov = windows.Overlapped{HEvent: l.connEv}
	if err := windows.ResetEvent(l.connEv); err != nil {
		return err
	}
	err := windows.ConnectNamedPipe(h, l.ov)
	switch {
	case err == nil, errors.Is(err, windows.ERROR_PIPE_CONNECTED):
		// Connected synchronously, or the client came between
		// CreateNamedPipe and ConnectNamedPipe.
		return nil
	case errors.Is(err, windows.ERROR_IO_PENDING):
	default:
		return err
	}
	ev, err := windows.WaitForMultipleObjects([]windows.Handle{l.connEv, l.closeEv}, false, windows.INFINITE)
	if err != nil {
		// Cannot happen with valid handles; do not leave the op behind.
		l.cancelConnect(h)
		return err
	}
	var n uint32
	if ev == windows.WAIT_OBJECT_0 {
		return windows.GetOverlappedResult(h, l.ov, &n, false)
	}
	// Closed. A client may have connected at the same moment: then the
	// connect completes successfully despite the cancel, and the caller
	// still gets that connection.
	if l.cancelConnect(h) {
		if err := windows.GetOverlappedResult(h, l.ov, &n, false); err == nil {
			return nil
		}
	}
	return net.ErrClosed
}

// cancelConnect cancels the pending ConnectNamedPipe on h and waits, bounded,
// for it to finish. It reports whether the operation has finished. If it has
// not (never seen), the OVERLAPPED and its event are retired for good: the
// caller then closes h, which aborts the operation, and the system can never
// write into freed memory.
func (l *Listener) cancelConnect(h windows.Handle) bool {
	_ = windows.CancelIoEx(h, l.ov)
	ev, _ := windows.WaitForSingleObject(l.connEv, uint32(closeCancelWait/time.Millisecond))
	if ev == windows.WAIT_OBJECT_0 {
		return true
	}
	leakedOverlapped.Lock()
	leakedOverlapped.ovs = append(leakedOverlapped.ovs, l.ov)
	leakedOverlapped.Unlock()
	l.ov = new(windows.Overlapped)
	l.connEv, _ = windows.CreateEvent(nil, 1, 0, nil)
	return false
}

// Close stops the listener: a blocked Accept returns net.ErrClosed and the
// pending instance is closed. Connections already accepted stay usable.
// A client that had opened the pending instance but was not accepted yet
// sees the pipe break before the greeting, and Dial retries elsewhere (the
// next generation's instance during a handover). Close is idempotent and
// bounded.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		_ = windows.SetEvent(l.closeEv)
		// Wait for a running Accept to notice (it cancels its connect, or
		// returns a client that connected at the same moment).
		l.acceptMu.Lock()
		defer l.acceptMu.Unlock()
		l.mu.Lock()
		if l.pending != windows.InvalidHandle {
			windows.CloseHandle(l.pending)
			l.pending = windows.InvalidHandle
		}
		l.mu.Unlock()
		if l.connEv != 0 {
			windows.CloseHandle(l.connEv)
			l.connEv = 0
		}
		windows.CloseHandle(l.closeEv)
		l.closeEv = 0
	})
	return nil
}

// SDDL reads back the owner and DACL of the pipe from one of the
// listener's own instances, in SDDL form. After Close it returns an error
// that satisfies errors.Is(err, net.ErrClosed).
func (l *Listener) SDDL() (string, error) {
	sd, err := l.securityDescriptor()
	if err != nil {
		return "", err
	}
	return sd.String(), nil
}

func (l *Listener) securityDescriptor() (*windows.SECURITY_DESCRIPTOR, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, &net.OpError{Op: "sddl", Net: "pipe", Addr: pipeAddr(l.path), Err: net.ErrClosed}
	}
	if l.pending == windows.InvalidHandle {
		return nil, fmt.Errorf("named pipe %s: no instance to read the security descriptor from", l.path)
	}
	return windows.GetSecurityInfo(l.pending, windows.SE_KERNEL_OBJECT,
		windows.OWNER_SECURITY_INFORMATION|windows.DACL_SECURITY_INFORMATION)
}

// pipeConn is one connected pipe instance (server side) or client handle.
type pipeConn struct {
	f      *os.File
	addr   pipeAddr
	server bool
}

// newPipeConn takes ownership of h, an overlapped pipe handle.
func newPipeConn(h windows.Handle, path string, server bool) *pipeConn {
	return &pipeConn{f: os.NewFile(uintptr(h), path), addr: pipeAddr(path), server: server}
}

func (c *pipeConn) opErr(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	if errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	} else if pe, ok := err.(*os.PathError); ok {
		err = pe.Err // the path is already in the OpError
	}
	return &net.OpError{Op: op, Net: "pipe", Addr: c.addr, Err: err}
}

func (c *pipeConn) Read(b []byte) (int, error) {
	n, err := c.f.Read(b)
	if err != nil && (errors.Is(err, windows.ERROR_PIPE_NOT_CONNECTED) || errors.Is(err, windows.ERROR_BROKEN_PIPE)) {
		// The other end closed (or disconnected) the pipe.
		err = io.EOF
	}
	return n, c.opErr("read", err)
}

func (c *pipeConn) Write(b []byte) (int, error) {
	n, err := c.f.Write(b)
	return n, c.opErr("write", err)
}

func (c *pipeConn) Close() error {
	return c.opErr("close", c.f.Close())
}

func (c *pipeConn) LocalAddr() net.Addr  { return c.addr }
func (c *pipeConn) RemoteAddr() net.Addr { return c.addr }

func (c *pipeConn) SetDeadline(t time.Time) error {
	return c.opErr("set deadline", c.f.SetDeadline(t))
}

func (c *pipeConn) SetReadDeadline(t time.Time) error {
	return c.opErr("set read deadline", c.f.SetReadDeadline(t))
}

func (c *pipeConn) SetWriteDeadline(t time.Time) error {
	return c.opErr("set write deadline", c.f.SetWriteDeadline(t))
}

// SyscallConn gives access to the pipe handle.
func (c *pipeConn) SyscallConn() (syscall.RawConn, error) { return c.f.SyscallConn() }

// ClientPID returns the process id of the client of a server-side conn
// returned by Listener.Accept. It fails for any other conn (the client end
// of a pipe included).
func ClientPID(c net.Conn) (uint32, error) {
	pc, ok := c.(*pipeConn)
	if !ok || pc == nil {
		return 0, fmt.Errorf("not a named pipe connection (%T)", c)
	}
	return pc.clientPID()
}

// clientPID returns the process id of the client of a server-side conn.
func (c *pipeConn) clientPID() (uint32, error) {
	if !c.server {
		return 0, errors.New("not the server end of a pipe")
	}
	rc, err := c.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var pid uint32
	var perr error
	if err := rc.Control(func(fd uintptr) {
		perr = windows.GetNamedPipeClientProcessId(windows.Handle(fd), &pid)
	}); err != nil {
		return 0, err
	}
	return pid, perr
}

// ServerPID returns the process id of the server of a client-side conn
// returned by Dial (GetNamedPipeServerProcessId). It fails for any other
// conn.
func ServerPID(c net.Conn) (uint32, error) {
	pc, ok := c.(*pipeConn)
	if !ok || pc == nil {
		return 0, fmt.Errorf("not a named pipe connection (%T)", c)
	}
	if pc.server {
		return 0, errors.New("not the client end of a pipe")
	}
	rc, err := pc.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var pid uint32
	var perr error
	if err := rc.Control(func(fd uintptr) {
		perr = windows.GetNamedPipeServerProcessId(windows.Handle(fd), &pid)
	}); err != nil {
		return 0, err
	}
	return pid, perr
}
