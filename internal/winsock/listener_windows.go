package winsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

const (
	// soExclusiveAddrUse is SO_EXCLUSIVEADDRUSE (~SO_REUSEADDR), missing from
	// x/sys: no other socket may bind the port while ours is open.
	soExclusiveAddrUse = ^windows.SO_REUSEADDR
	// soAcceptConn is SO_ACCEPTCONN, missing from x/sys: nonzero on a
	// listening socket.
	soAcceptConn = 0x0002
	// fromProtocolInfo is FROM_PROTOCOL_INFO: WSASocket takes the address
	// family, type and protocol from the WSAPROTOCOL_INFOW.
	fromProtocolInfo = -1

	socketFlags = windows.WSA_FLAG_OVERLAPPED | windows.WSA_FLAG_NO_HANDLE_INHERIT

	// addrLen is the room AcceptEx needs for each address.
	addrLen = uint32(unsafe.Sizeof(windows.RawSockaddrAny{})) + 16

	// cancelWaitMillis bounds how long Accept (and so Close) waits for a
	// cancelled AcceptEx to complete. Cancellation is normally immediate.
	cancelWaitMillis = 5000
)

// ProtocolInfoSize is the length of the bytes Duplicate returns (a
// WSAPROTOCOL_INFOW).
const ProtocolInfoSize = int(unsafe.Sizeof(windows.WSAProtocolInfo{}))

// acceptOp is the memory the kernel writes while an AcceptEx is pending. It
// lives on the heap and is referenced by its Listener (or by leakedOps) until
// the operation is known to be complete.
type acceptOp struct {
	ov  windows.Overlapped
	buf [2 * addrLen]byte
}

var (
	leakedMu  sync.Mutex
	leakedOps []*acceptOp // ops that did not complete after cancellation: kept alive forever
)

// Listener is a net.Listener over a listening SOCKET it owns. It accepts with
// AcceptEx completed through an event (never an IOCP), so the socket can be
// shared with another process during a handover. Accept calls are serialized.
type Listener struct {
	s      windows.Handle
	family int
	addr   *net.TCPAddr

	closed     atomic.Bool
	closeOnce  sync.Once
	closeEvent windows.Handle // manual reset, set once by Close

	mu      sync.Mutex // held by Accept for a whole AcceptEx, and by Close to release handles
	op      *acceptOp
	opEvent windows.Handle // manual reset; 0 once leaked with a stuck op

	dlMu      sync.Mutex
	deadline  time.Time      // of Accept (SetDeadline)
	dlChanged windows.Handle // auto reset, set by SetDeadline; 0 after Close
}

var _ net.Listener = (*Listener)(nil)

// Listen creates a listening TCP socket ("tcp", "tcp4", "tcp6") bound to addr
// with SO_EXCLUSIVEADDRUSE, never associated with an IOCP, and returns a
// Listener serving it. As with net.Listen, "tcp" with a wildcard address
// listens on both IPv6 and IPv4 when the system allows it.
func Listen(network, addr string) (*Listener, error) {
	s, err := listenTCP(network, addr)
	if err != nil {
		return nil, err
	}
	l, err := newListener(s)
	if err != nil {
		windows.Closesocket(s)
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	return l, nil
}

// listenTCP creates the listening socket for Listen and ListenSocket; errors
// are *net.OpError.
func listenTCP(network, addr string) (windows.Handle, error) {
	fail := func(err error) (windows.Handle, error) {
		return windows.InvalidHandle, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return fail(net.UnknownNetworkError(network))
	}
	ta, err := net.ResolveTCPAddr(network, addr)
	if err != nil {
		return fail(err)
	}
	wildcard := ta.IP == nil || ta.IP.IsUnspecified()
	ip4 := ta.IP.To4()
	var s windows.Handle
	switch {
	case network == "tcp4" || (network == "tcp" && ip4 != nil && !wildcard):
		if ta.IP != nil && ip4 == nil {
			return fail(&net.AddrError{Err: "non-IPv4 address", Addr: addr})
		}
		sa := &windows.SockaddrInet4{Port: ta.Port}
		copy(sa.Addr[:], ip4)
		s, err = listenSocket(windows.AF_INET, sa, false)
	case network == "tcp6":
		if ip4 != nil && !ta.IP.IsUnspecified() {
			return fail(&net.AddrError{Err: "non-IPv6 address", Addr: addr})
		}
		sa := &windows.SockaddrInet6{Port: ta.Port}
		copy(sa.Addr[:], ta.IP.To16())
		if ip4 != nil { // 0.0.0.0 with tcp6 means ::
			sa.Addr = [16]byte{}
		}
		sa.ZoneId = zoneID(ta.Zone)
		s, err = listenSocket(windows.AF_INET6, sa, true)
	case wildcard: // "tcp" on any address: dual stack, falling back to IPv4
		s, err = listenSocket(windows.AF_INET6, &windows.SockaddrInet6{Port: ta.Port}, false)
		if err != nil {
			s, err = listenSocket(windows.AF_INET, &windows.SockaddrInet4{Port: ta.Port}, false)
		}
	default: // "tcp" with an IPv6 address
		sa := &windows.SockaddrInet6{Port: ta.Port, ZoneId: zoneID(ta.Zone)}
		copy(sa.Addr[:], ta.IP.To16())
		s, err = listenSocket(windows.AF_INET6, sa, false)
	}
	if err != nil {
		return fail(err)
	}
	return s, nil
}

// listenSocket creates, binds and listens an overlapped, non-inheritable
// socket. For AF_INET6, v6only selects IPV6_V6ONLY.
func listenSocket(family int, sa windows.Sockaddr, v6only bool) (windows.Handle, error) {
	s, err := windows.WSASocket(int32(family), windows.SOCK_STREAM, windows.IPPROTO_TCP, nil, 0, socketFlags)
	if err != nil {
		return windows.InvalidHandle, os.NewSyscallError("wsasocket", err)
	}
	step := func() error {
		if family == windows.AF_INET6 {
			if err := windows.SetsockoptInt(s, windows.IPPROTO_IPV6, windows.IPV6_V6ONLY, boolInt(v6only)); err != nil {
				return os.NewSyscallError("setsockopt IPV6_V6ONLY", err)
			}
		}
		if err := windows.SetsockoptInt(s, windows.SOL_SOCKET, soExclusiveAddrUse, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_EXCLUSIVEADDRUSE", err)
		}
		if err := windows.Bind(s, sa); err != nil {
			return os.NewSyscallError("bind", err)
		}
		if err := windows.Listen(s, windows.SOMAXCONN); err != nil {
			return os.NewSyscallError("listen", err)
		}
		return nil
	}
	if err := step(); err != nil {
		windows.Closesocket(s)
		return windows.InvalidHandle, err
	}
	return s, nil
}

// newListener wraps the listening socket s; on error the caller still owns s.
func newListener(s windows.Handle) (*Listener, error) {
	sa, err := windows.Getsockname(s)
	if err != nil {
		return nil, os.NewSyscallError("getsockname", err)
	}
	addr, family := tcpAddr(sa)
	if addr == nil {
		return nil, fmt.Errorf("winsock: socket is not an IP socket (%T)", sa)
	}
	opEvent, err := windows.CreateEvent(nil, 1, 0, nil)
	if err != nil {
		return nil, os.NewSyscallError("CreateEvent", err)
	}
	closeEvent, err := windows.CreateEvent(nil, 1, 0, nil)
	if err != nil {
		windows.CloseHandle(opEvent)
		return nil, os.NewSyscallError("CreateEvent", err)
	}
	dlChanged, err := windows.CreateEvent(nil, 0, 0, nil)
	if err != nil {
		windows.CloseHandle(opEvent)
		windows.CloseHandle(closeEvent)
		return nil, os.NewSyscallError("CreateEvent", err)
	}
	return &Listener{s: s, family: family, addr: addr, closeEvent: closeEvent, op: new(acceptOp), opEvent: opEvent, dlChanged: dlChanged}, nil
}

// Duplicate returns the WSAPROTOCOL_INFOW bytes with which process pid can
// rebuild the socket s (ListenerFromProtocolInfo, PacketConnFromProtocolInfo).
// They are single use and valid only in that process; s itself stays open.
func Duplicate(s windows.Handle, pid uint32) ([]byte, error) {
	var info windows.WSAProtocolInfo
	if err := windows.WSADuplicateSocket(s, pid, &info); err != nil {
		return nil, os.NewSyscallError("WSADuplicateSocket", err)
	}
	b := make([]byte, ProtocolInfoSize)
	copy(b, unsafe.Slice((*byte)(unsafe.Pointer(&info)), ProtocolInfoSize))
	return b, nil
}

// ListenerFromProtocolInfo rebuilds a listening socket from bytes that
// Duplicate produced for this process, and serves it.
func ListenerFromProtocolInfo(info []byte) (*Listener, error) {
	s, err := socketFromProtocolInfo(info, windows.SOCK_STREAM, windows.IPPROTO_TCP)
	if err != nil {
		return nil, err
	}
	// WSASocket may build a fresh socket from info that only looks right:
	// insist on a listening one.
	if v, err := windows.GetsockoptInt(s, windows.SOL_SOCKET, soAcceptConn); err != nil || v == 0 {
		windows.Closesocket(s)
		if err == nil {
			err = errors.New("socket is not listening")
		}
		return nil, fmt.Errorf("winsock: socket rebuilt from protocol info is not a listening socket: %w", err)
	}
	l, err := newListener(s)
	if err != nil {
		windows.Closesocket(s)
		return nil, err
	}
	return l, nil
}

// SocketFromProtocolInfo rebuilds a UDP socket from bytes that Duplicate
// produced for this process. The caller owns it (close it with closesocket).
// PacketConnFromProtocolInfo serves it; do not hand it to os.NewFile or
// net.FilePacketConn, which put it on the runtime's IOCP, shared with every
// copy in other processes.
func SocketFromProtocolInfo(info []byte) (windows.Handle, error) {
	return socketFromProtocolInfo(info, windows.SOCK_DGRAM, windows.IPPROTO_UDP)
}

func socketFromProtocolInfo(info []byte, sotype, proto int32) (windows.Handle, error) {
	if len(info) != ProtocolInfoSize {
		return windows.InvalidHandle, fmt.Errorf("winsock: protocol info is %d bytes, want %d (a WSAPROTOCOL_INFOW from Duplicate)", len(info), ProtocolInfoSize)
	}
	var pi windows.WSAProtocolInfo
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&pi)), ProtocolInfoSize), info)
	if (pi.AddressFamily != windows.AF_INET && pi.AddressFamily != windows.AF_INET6) ||
		pi.SocketType != sotype || pi.Protocol != proto {
		return windows.InvalidHandle, fmt.Errorf("winsock: protocol info does not describe the expected socket (family %d, type %d, protocol %d; want type %d, protocol %d)",
			pi.AddressFamily, pi.SocketType, pi.Protocol, sotype, proto)
	}
	s, err := windows.WSASocket(fromProtocolInfo, fromProtocolInfo, fromProtocolInfo, &pi, 0, socketFlags)
	if err != nil {
		return windows.InvalidHandle, fmt.Errorf("winsock: rebuilding socket from protocol info (made for another process, already used, or its source closed?): %w",
			os.NewSyscallError("wsasocket", err))
	}
	return s, nil
}

// Socket returns the listening SOCKET, for Duplicate. It stays owned by l and
// is valid until Close.
func (l *Listener) Socket() windows.Handle { return l.s }

// Addr returns the listening address, a *net.TCPAddr.
func (l *Listener) Addr() net.Addr { return l.addr }

func (l *Listener) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Addr: l.addr, Err: err}
}

var errRetry = errors.New("retry")

// Accept waits for and returns the next connection. After Close it returns an
// error satisfying errors.Is(err, net.ErrClosed); a connection that completed
// while Close was cancelling is still returned.
func (l *Listener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if l.closed.Load() || l.opEvent == 0 {
			return nil, l.opError("accept", net.ErrClosed)
		}
		c, err := l.acceptOnce()
		if err != errRetry {
			return c, err
		}
	}
}

// acceptOnce runs one AcceptEx; l.mu is held.
func (l *Listener) acceptOnce() (net.Conn, error) {
	if _, expired := l.timeout(); expired {
		return nil, l.opError("accept", os.ErrDeadlineExceeded)
	}
	as, err := windows.WSASocket(int32(l.family), windows.SOCK_STREAM, windows.IPPROTO_TCP, nil, 0, socketFlags)
	if err != nil {
		return nil, l.opError("accept", os.NewSyscallError("wsasocket", err))
	}
	keep := false
	defer func() {
		if !keep {
			windows.Closesocket(as)
		}
	}()

	op := l.op
	// The low bit of hEvent asks Windows not to queue a completion packet:
	// duplicates in other processes share this socket's IOCP association.
	op.ov = windows.Overlapped{HEvent: l.opEvent | 1}
	if err := windows.ResetEvent(l.opEvent); err != nil {
		return nil, l.opError("accept", os.NewSyscallError("ResetEvent", err))
	}
	var n uint32
	err = windows.AcceptEx(l.s, as, &op.buf[0], 0, addrLen, addrLen, &n, &op.ov)
	var why error // why the AcceptEx was cancelled
	if err == windows.ERROR_IO_PENDING {
		var done bool
		if done, why = l.wait(); !done {
			return nil, l.opError("accept", net.ErrClosed)
		}
		var flags uint32
		err = windows.WSAGetOverlappedResult(l.s, &op.ov, &n, false, &flags)
	}
	if err != nil {
		switch {
		case l.closed.Load() && err == windows.ERROR_OPERATION_ABORTED:
			return nil, l.opError("accept", net.ErrClosed)
		case why != nil && err == windows.ERROR_OPERATION_ABORTED:
			return nil, l.opError("accept", why)
		case err == windows.ERROR_NETNAME_DELETED || err == windows.WSAECONNRESET:
			return nil, errRetry // the peer reset before we accepted
		}
		return nil, l.opError("accept", os.NewSyscallError("AcceptEx", err))
	}
	c, err := newConn(l.s, as, &op.buf)
	if err != nil {
		return nil, l.opError("accept", err)
	}
	keep = true
	return c, nil
}

// wait blocks until the pending AcceptEx completes, cancelling it if Close
// is called or the deadline passes first (moving the deadline recomputes the
// timeout); why says which (nil: it completed by itself). It reports false
// if the operation did not complete even after cancellation; its memory and
// event are then leaked on purpose (the kernel may still write to them) and
// the listener is unusable.
func (l *Listener) wait() (done bool, why error) {
	for why == nil {
		timeout, expired := l.timeout()
		if expired {
			why = os.ErrDeadlineExceeded
			break
		}
		r, err := windows.WaitForMultipleObjects([]windows.Handle{l.opEvent, l.closeEvent, l.dlChanged}, false, timeout)
		switch {
		case err != nil:
			why = os.NewSyscallError("WaitForMultipleObjects", err)
		case r == windows.WAIT_OBJECT_0:
			return true, nil
		case r == windows.WAIT_OBJECT_0+1:
			why = net.ErrClosed
		}
		// The deadline changed or the timeout elapsed: look again.
	}
	// Closing, past the deadline, or the wait failed: closesocket does not
	// cancel the AcceptEx while another process holds a copy of the
	// socket, and a pending AcceptEx could take a connection nobody will
	// serve.
	windows.CancelIoEx(l.s, &l.op.ov)
	r, err := windows.WaitForSingleObject(l.opEvent, cancelWaitMillis)
	if err == nil && r == windows.WAIT_OBJECT_0 {
		return true, why
	}
	leakedMu.Lock()
	leakedOps = append(leakedOps, l.op)
	leakedMu.Unlock()
	l.op, l.opEvent = nil, 0
	return false, why
}

// timeout returns how long Accept may wait (windows.INFINITE without a
// deadline), or true if the deadline has passed.
func (l *Listener) timeout() (uint32, bool) {
	l.dlMu.Lock()
	dl := l.deadline
	l.dlMu.Unlock()
	return waitFor(dl)
}

// SetDeadline sets the deadline of Accept, as on *net.TCPListener: past it,
// Accept fails with an error satisfying errors.Is(err,
// os.ErrDeadlineExceeded) (a connection accepted at that moment is still
// returned). A blocked Accept is woken to apply it. A zero t means none.
func (l *Listener) SetDeadline(t time.Time) error {
	l.dlMu.Lock()
	defer l.dlMu.Unlock()
	if l.dlChanged == 0 {
		return l.opError("set", net.ErrClosed)
	}
	l.deadline = t
	if err := windows.SetEvent(l.dlChanged); err != nil {
		return l.opError("set", os.NewSyscallError("SetEvent", err))
	}
	return nil
}

// StopAccepting makes Accept return net.ErrClosed from now on (a blocked
// Accept is woken and cancels its AcceptEx) but keeps the socket open:
// connections keep queueing for other processes' copies, and this process
// can still duplicate it for a new one (a generation that handed over
// keeps its socket through its successor's probation). Close closes it.
func (l *Listener) StopAccepting() {
	if l.closed.Swap(true) {
		return
	}
	windows.SetEvent(l.closeEvent)
	l.mu.Lock() // a woken Accept releases it within cancelWaitMillis
	l.mu.Unlock()
}

// Close stops accepting: it wakes a blocked Accept, which cancels its
// AcceptEx, then closes the socket. Other processes' copies stay open. Close
// is idempotent and returns within a bounded time.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		windows.SetEvent(l.closeEvent)
		l.mu.Lock() // a woken Accept releases it within cancelWaitMillis
		defer l.mu.Unlock()
		if e := windows.Closesocket(l.s); e != nil {
			err = l.opError("close", os.NewSyscallError("closesocket", e))
		}
		if l.opEvent != 0 {
			windows.CloseHandle(l.opEvent)
		}
		windows.CloseHandle(l.closeEvent)
		l.dlMu.Lock()
		windows.CloseHandle(l.dlChanged)
		l.dlChanged = 0
		l.dlMu.Unlock()
	})
	return err
}

// tcpAddr converts sa and reports its address family.
func tcpAddr(sa windows.Sockaddr) (*net.TCPAddr, int) {
	switch sa := sa.(type) {
	case *windows.SockaddrInet4:
		return &net.TCPAddr{IP: net.IPv4(sa.Addr[0], sa.Addr[1], sa.Addr[2], sa.Addr[3]), Port: sa.Port}, windows.AF_INET
	case *windows.SockaddrInet6:
		a := &net.TCPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: sa.Port}
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a.Zone = ifi.Name
			} else {
				a.Zone = fmt.Sprint(sa.ZoneId)
			}
		}
		return a, windows.AF_INET6
	}
	return nil, 0
}

func zoneID(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	var n uint32
	fmt.Sscan(zone, &n)
	return n
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
