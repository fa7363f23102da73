package winsock

import (
	"net"
	"testing"
	"unsafe"

	"golang.org/x/sys/windows"
)

func TestZZProbe(t *testing.T) {
	_, err := net.ListenPacket("udp4", "127.0.0.1:0")
	t.Logf("net.ListenPacket: %v", err)
	s, err := windows.WSASocket(windows.AF_INET, windows.SOCK_DGRAM, windows.IPPROTO_UDP, nil, 0, socketFlags)
	t.Logf("WSASocket: %v %v", s, err)
	if err != nil {
		return
	}
	defer windows.Closesocket(s)
	t.Logf("excl: %v", windows.SetsockoptInt(s, windows.SOL_SOCKET, soExclusiveAddrUse, 1))
	t.Logf("bind: %v", windows.Bind(s, &windows.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := windows.Getsockname(s)
	t.Logf("name: %+v %v", sa, err)
	flag := uint32(0)
	var ret uint32
	err = windows.WSAIoctl(s, windows.SIO_UDP_CONNRESET, (*byte)(unsafe.Pointer(&flag)), 4, nil, 0, &ret, nil, 0)
	t.Logf("SIO_UDP_CONNRESET: %v", err)
	s6, err := windows.WSASocket(windows.AF_INET6, windows.SOCK_DGRAM, windows.IPPROTO_UDP, nil, 0, socketFlags)
	t.Logf("WSASocket6: %v %v", s6, err)
	if err == nil {
		t.Logf("v6only: %v", windows.SetsockoptInt(s6, windows.IPPROTO_IPV6, windows.IPV6_V6ONLY, 0))
		t.Logf("bind6: %v", windows.Bind(s6, &windows.SockaddrInet6{}))
		windows.Closesocket(s6)
	}
}
