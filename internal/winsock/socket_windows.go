package winsock

import (
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/windows"
)

// Socket is a listening TCP socket that this process holds but never
// serves: a supervisor opens it once and hands a duplicate to every
// generation it starts (Duplicate), which serves it with
// ListenerFromProtocolInfo. Like Listen's sockets it is created with
// SO_EXCLUSIVEADDRUSE, not inheritable, and never put on an I/O completion
// port (every duplicate shares the socket's IOCP association, so a port of
// ours would receive the generations' completions). Its methods may be
// called from several goroutines.
type Socket struct {
	network string
	addr    *net.TCPAddr

	mu sync.Mutex // guards s against Close during Duplicate
	s  windows.Handle
}

// ListenSocket creates a listening TCP socket ("tcp", "tcp4", "tcp6") bound
// to addr, with the same choices as Listen (a wildcard address with "tcp"
// listens on IPv6 and IPv4 where the system allows it). Errors are
// *net.OpError.
func ListenSocket(network, addr string) (*Socket, error) {
	s, err := listenTCP(network, addr)
	if err != nil {
		return nil, err
	}
	sa, err := windows.Getsockname(s)
	if err != nil {
		windows.Closesocket(s)
		return nil, &net.OpError{Op: "listen", Net: network, Err: os.NewSyscallError("getsockname", err)}
	}
	ta, _ := tcpAddr(sa)
	if ta == nil {
		windows.Closesocket(s)
		return nil, &net.OpError{Op: "listen", Net: network, Err: fmt.Errorf("winsock: socket is not an IP socket (%T)", sa)}
	}
	return &Socket{network: network, addr: ta, s: s}, nil
}

// Network returns the network the socket was opened for.
func (s *Socket) Network() string { return s.network }

// Addr returns the bound address (with the port the system chose for port
// 0), a *net.TCPAddr.
func (s *Socket) Addr() net.Addr { return s.addr }

// Handle returns the SOCKET, or windows.InvalidHandle after Close. It stays
// owned by s.
func (s *Socket) Handle() windows.Handle {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s
}

// Duplicate returns the WSAPROTOCOL_INFOW bytes with which process pid
// rebuilds the socket (ListenerFromProtocolInfo); see the package function
// Duplicate. It fails after Close.
func (s *Socket) Duplicate(pid uint32) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.s == windows.InvalidHandle {
		return nil, &net.OpError{Op: "duplicate", Net: s.network, Addr: s.addr, Err: net.ErrClosed}
	}
	return Duplicate(s.s, pid)
}

// Close closes this process's copy of the socket. The port stays bound as
// long as a generation holds a duplicate. Close is idempotent.
func (s *Socket) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.s == windows.InvalidHandle {
		return nil
	}
	err := windows.Closesocket(s.s)
	s.s = windows.InvalidHandle
	if err != nil {
		return &net.OpError{Op: "close", Net: s.network, Addr: s.addr, Err: os.NewSyscallError("closesocket", err)}
	}
	return nil
}
