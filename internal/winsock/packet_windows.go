package winsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// PacketConn is a net.PacketConn over a UDP SOCKET it owns. Reads and writes
// use overlapped WSARecvFrom and WSASendTo completed through events (never
// an IOCP), so the socket can be shared with another process during a
// handover. One ReadFrom and one WriteTo may run at the same time; further
// concurrent calls of the same kind wait for their turn.
type PacketConn struct {
	evSocket
	network string
	family  int
	laddr   *net.UDPAddr
	cleanup runtime.Cleanup
}

var _ net.PacketConn = (*PacketConn)(nil)

// ListenPacket creates a UDP socket ("udp", "udp4", "udp6") bound to addr
// with SO_EXCLUSIVEADDRUSE, never associated with an IOCP, and returns a
// PacketConn serving it. As with net.ListenPacket, "udp" with a wildcard
// address serves both IPv6 and IPv4 when the system allows it.
func ListenPacket(network, addr string) (*PacketConn, error) {
	fail := func(err error) (*PacketConn, error) {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	switch network {
	case "udp", "udp4", "udp6":
	default:
		return fail(net.UnknownNetworkError(network))
	}
	ua, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		return fail(err)
	}
	targets, err := bindTargets(network[len(network)-1], ua.IP, ua.Port, ua.Zone, addr)
	if err != nil {
		return fail(err)
	}
	var s windows.Handle
	for _, t := range targets {
		if s, err = udpSocket(t); err == nil {
			break
		}
	}
	if err != nil {
		return fail(err)
	}
	c, err := newPacketConn(s, network)
	if err != nil {
		windows.Closesocket(s)
		return fail(err)
	}
	return c, nil
}

// udpSocket creates and binds an overlapped, non-inheritable UDP socket.
func udpSocket(t bindTarget) (windows.Handle, error) {
	s, err := windows.WSASocket(int32(t.family), windows.SOCK_DGRAM, windows.IPPROTO_UDP, nil, 0, socketFlags)
	if err != nil {
		return windows.InvalidHandle, os.NewSyscallError("wsasocket", err)
	}
	step := func() error {
		if t.family == windows.AF_INET6 {
			if err := windows.SetsockoptInt(s, windows.IPPROTO_IPV6, windows.IPV6_V6ONLY, boolInt(t.v6only)); err != nil {
				return os.NewSyscallError("setsockopt IPV6_V6ONLY", err)
			}
		} else {
			// Like net.ListenPacket: allow broadcast. Best effort.
			windows.SetsockoptInt(s, windows.SOL_SOCKET, windows.SO_BROADCAST, 1)
		}
		if err := windows.SetsockoptInt(s, windows.SOL_SOCKET, soExclusiveAddrUse, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_EXCLUSIVEADDRUSE", err)
		}
		if err := windows.Bind(s, t.sa); err != nil {
			return os.NewSyscallError("bind", err)
		}
		return nil
	}
	if err := step(); err != nil {
		windows.Closesocket(s)
		return windows.InvalidHandle, err
	}
	return s, nil
}

// PacketConnFromProtocolInfo rebuilds a bound UDP socket from bytes that
// Duplicate produced for this process, and serves it. The socket is shared
// with its other copies: each datagram goes to one of the copies reading.
func PacketConnFromProtocolInfo(info []byte) (*PacketConn, error) {
	s, err := SocketFromProtocolInfo(info)
	if err != nil {
		return nil, err
	}
	// WSASocket may build a fresh socket from info that only looks right:
	// insist on a bound one.
	sa, err := windows.Getsockname(s)
	if err == nil {
		if a, _ := tcpAddr(sa); a == nil || a.Port == 0 {
			err = errors.New("no local port")
		}
	}
	if err != nil {
		windows.Closesocket(s)
		return nil, fmt.Errorf("winsock: socket rebuilt from protocol info is not a bound UDP socket: %w", err)
	}
	c, err := newPacketConn(s, "udp")
	if err != nil {
		windows.Closesocket(s)
		return nil, err
	}
	return c, nil
}

// newPacketConn wraps the bound UDP socket s; on error the caller still owns s.
func newPacketConn(s windows.Handle, network string) (*PacketConn, error) {
	sa, err := windows.Getsockname(s)
	if err != nil {
		return nil, os.NewSyscallError("getsockname", err)
	}
	ta, family := tcpAddr(sa)
	if ta == nil {
		return nil, fmt.Errorf("winsock: socket is not an IP socket (%T)", sa)
	}
	// Like net.ListenPacket: a datagram sent to a closed port or an
	// unreachable network must not fail a later read (go.dev/issue/5834,
	// 68614). The setting belongs to the socket, so to all its copies.
	// Best effort: Wine 8.0 supports only the first ioctl; ReadFrom skips
	// such reports anyway.
	for _, code := range []uint32{windows.SIO_UDP_CONNRESET, windows.SIO_UDP_NETRESET} {
		var flag, ret uint32
		windows.WSAIoctl(s, code, (*byte)(unsafe.Pointer(&flag)), uint32(unsafe.Sizeof(flag)), nil, 0, &ret, nil, 0)
	}

	c := &PacketConn{
		network: network,
		family:  family,
		laddr:   &net.UDPAddr{IP: ta.IP, Port: ta.Port, Zone: ta.Zone},
	}
	if err := c.init(s, maxIOBuf); err != nil {
		return nil, err
	}
	// Like net.UDPConn, do not leak the socket of a PacketConn dropped
	// without Close. No operation is pending then: it would hold c.
	c.cleanup = runtime.AddCleanup(c, (*evHandles).release, c.h)
	return c, nil
}

// Socket returns the UDP SOCKET, for Duplicate. It stays owned by c and is
// valid until Close.
func (c *PacketConn) Socket() windows.Handle { return c.s }

// LocalAddr returns the local address, a *net.UDPAddr.
func (c *PacketConn) LocalAddr() net.Addr { return c.laddr }

// ReadFrom reads a datagram into b and returns its length and source, a
// *net.UDPAddr. A datagram longer than b fails with WSAEMSGSIZE (its first
// len(b) bytes are returned). After Close the error satisfies
// errors.Is(err, net.ErrClosed); past the read deadline it satisfies
// errors.Is(err, os.ErrDeadlineExceeded) and is a timeout. A datagram that
// arrived at the same moment as Close or the deadline is still returned.
func (c *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	d := &c.r
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		n, err := c.do(d, func(op *ioOp) error {
			op.wsabuf = windows.WSABuf{Len: uint32(min(len(b), len(op.buf))), Buf: unsafe.SliceData(op.buf)}
			op.rsa = windows.RawSockaddrAny{}
			op.rsaLen = int32(unsafe.Sizeof(op.rsa))
			op.flags = 0
			return windows.WSARecvFrom(c.s, &op.wsabuf, 1, &op.qty, &op.flags, &op.rsa, &op.rsaLen, &op.ov, nil)
		})
		switch err {
		case windows.WSAECONNRESET, windows.WSAENETRESET, windows.ERROR_PORT_UNREACHABLE:
			// An ICMP report for an earlier datagram sent by some copy
			// of this socket (if the ioctls above did not take): not
			// about any datagram to read. Read on.
			continue
		case nil, windows.WSAEMSGSIZE:
			m := copy(b, d.op.buf[:n])
			var addr net.Addr
			if a := udpAddrFromRaw(&d.op.rsa); a != nil {
				addr = a
			}
			if err != nil {
				return m, addr, c.opError("read", nil, os.NewSyscallError("wsarecvfrom", err))
			}
			return m, addr, nil
		}
		if errno, ok := err.(syscall.Errno); ok {
			err = os.NewSyscallError("wsarecvfrom", errno)
		}
		return 0, nil, c.opError("read", nil, err)
	}
}

// WriteTo sends b as one datagram to addr, a *net.UDPAddr. After Close the
// error satisfies errors.Is(err, net.ErrClosed); past the write deadline it
// satisfies errors.Is(err, os.ErrDeadlineExceeded) and is a timeout.
func (c *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || ua == nil {
		return 0, c.opError("write", addr, syscall.EINVAL)
	}
	var to windows.RawSockaddrAny
	tolen, err := rawFromUDPAddr(&to, c.family, ua)
	if err != nil {
		return 0, c.opError("write", addr, err)
	}
	if len(b) > maxIOBuf {
		return 0, c.opError("write", addr, os.NewSyscallError("wsasendto", windows.WSAEMSGSIZE))
	}
	d := &c.w
	d.mu.Lock()
	defer d.mu.Unlock()
	n, err := c.do(d, func(op *ioOp) error {
		copy(op.buf, b)
		op.rsa = to
		op.wsabuf = windows.WSABuf{Len: uint32(len(b)), Buf: unsafe.SliceData(op.buf)}
		return windows.WSASendTo(c.s, &op.wsabuf, 1, &op.qty, 0, &op.rsa, tolen, &op.ov, nil)
	})
	if err != nil {
		if errno, ok := err.(syscall.Errno); ok {
			err = os.NewSyscallError("wsasendto", errno)
		}
		return 0, c.opError("write", addr, err)
	}
	return int(n), nil
}

// SetDeadline implements net.PacketConn: it sets both the read and the
// write deadline, waking blocked calls to apply them.
func (c *PacketConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline implements net.PacketConn; it wakes a blocked ReadFrom to
// apply the new deadline. A zero t means no deadline.
func (c *PacketConn) SetReadDeadline(t time.Time) error {
	return c.opError("set", nil, c.r.setDeadline(t))
}

// SetWriteDeadline implements net.PacketConn; it wakes a blocked WriteTo to
// apply the new deadline. A zero t means no deadline.
func (c *PacketConn) SetWriteDeadline(t time.Time) error {
	return c.opError("set", nil, c.w.setDeadline(t))
}

// Close wakes blocked ReadFrom and WriteTo calls, which cancel their
// operations, then closes the socket. Other processes' copies stay open.
// Close returns within a bounded time; a second Close reports net.ErrClosed.
func (c *PacketConn) Close() error {
	c.cleanup.Stop()
	return c.opError("close", nil, c.close())
}

func (c *PacketConn) opError(op string, addr net.Addr, err error) error {
	if err == nil {
		return nil
	}
	return &net.OpError{Op: op, Net: c.network, Source: c.laddr, Addr: addr, Err: err}
}

// udpAddrFromRaw converts a source address WSARecvFrom wrote, or nil.
func udpAddrFromRaw(rsa *windows.RawSockaddrAny) *net.UDPAddr {
	a := rawTCPAddr(rsa)
	if a == nil {
		return nil
	}
	return &net.UDPAddr{IP: a.IP, Port: a.Port, Zone: a.Zone}
}

// rawFromUDPAddr writes a into rsa as a sockaddr of the socket's family
// (IPv4 addresses are mapped for an IPv6 socket) and returns its length.
func rawFromUDPAddr(rsa *windows.RawSockaddrAny, family int, a *net.UDPAddr) (int32, error) {
	if a.Port < 0 || a.Port > 0xffff {
		return 0, &net.AddrError{Err: "invalid port", Addr: a.String()}
	}
	port := [2]byte{byte(a.Port >> 8), byte(a.Port)} // network byte order
	switch family {
	case windows.AF_INET:
		ip := a.IP.To4()
		if len(a.IP) == 0 {
			ip = net.IPv4zero.To4()
		}
		if ip == nil {
			return 0, &net.AddrError{Err: "non-IPv4 address", Addr: a.String()}
		}
		p := (*windows.RawSockaddrInet4)(unsafe.Pointer(rsa))
		*p = windows.RawSockaddrInet4{Family: windows.AF_INET}
		p.Port = *(*uint16)(unsafe.Pointer(&port))
		copy(p.Addr[:], ip)
		return int32(unsafe.Sizeof(*p)), nil
	case windows.AF_INET6:
		ip := a.IP.To16()
		if len(a.IP) == 0 {
			ip = net.IPv6unspecified
		}
		if ip == nil {
			return 0, &net.AddrError{Err: "non-IPv6 address", Addr: a.String()}
		}
		p := (*windows.RawSockaddrInet6)(unsafe.Pointer(rsa))
		*p = windows.RawSockaddrInet6{Family: windows.AF_INET6, Scope_id: zoneID(a.Zone)}
		p.Port = *(*uint16)(unsafe.Pointer(&port))
		copy(p.Addr[:], ip)
		return int32(unsafe.Sizeof(*p)), nil
	}
	return 0, fmt.Errorf("winsock: unexpected address family %d", family)
}
