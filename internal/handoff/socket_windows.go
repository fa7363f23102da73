package handoff

import (
	"github.com/baton-go/baton/internal/winsock"
)

// HeldSocket is a listening socket that a supervisor owns for as long as it
// runs and hands to every generation it starts (SpawnConfig.Items): each
// Spawn duplicates it for the new pid with WSADuplicateSocket, and the
// generation, a baton library program, rebuilds it when it asks for the
// same network and address. The supervisor never accepts on it. Close it
// at the end; the port stays bound while a generation holds a copy.
type HeldSocket struct {
	*winsock.Socket
}

// ListenSocket opens a listening socket for network ("tcp", "tcp4",
// "tcp6") and addr as the library does on Windows (baton's own winsock:
// SO_EXCLUSIVEADDRUSE, never on an I/O completion port).
func ListenSocket(network, addr string) (*HeldSocket, error) {
	s, err := winsock.ListenSocket(network, addr)
	if err != nil {
		return nil, err
	}
	return &HeldSocket{s}, nil
}

// Item is what to put in SpawnConfig.Items to hand the socket over. desc
// says how the generation finds it: the network and address the app
// listens on. Left empty, Kind is KindListener, Network the socket's and
// Addr the bound address (with the real port). The item's Close does not
// close the socket (HeldSocket.Close does).
func (s *HeldSocket) Item(desc FileDesc) Item {
	if desc.Kind == "" {
		desc.Kind = KindListener
	}
	if desc.Network == "" {
		desc.Network = s.Network()
	}
	if desc.Addr == "" {
		desc.Addr = s.Addr().String()
	}
	return Item{Desc: desc, Socket: uintptr(s.Handle())}
}
