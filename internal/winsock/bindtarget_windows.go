package winsock

import (
	"net"

	"golang.org/x/sys/windows"
)

// bindTarget is a way to create and bind a socket for an address.
type bindTarget struct {
	family int
	sa     windows.Sockaddr
	v6only bool // for AF_INET6: IPV6_V6ONLY
}

// bindTargets returns the sockets to try in order (the first that can be
// created and bound wins) for ip, port and zone resolved from addr. kind is
// the last byte of the network name: '4', '6', or anything else for the
// unsuffixed network, which with a wildcard address means dual stack,
// falling back to IPv4 (the choices Listen makes for TCP).
func bindTargets(kind byte, ip net.IP, port int, zone, addr string) ([]bindTarget, error) {
	wildcard := ip == nil || ip.IsUnspecified()
	ip4 := ip.To4()
	switch {
	case kind == '4' || (kind != '6' && ip4 != nil && !wildcard):
		if ip != nil && ip4 == nil {
			return nil, &net.AddrError{Err: "non-IPv4 address", Addr: addr}
		}
		sa := &windows.SockaddrInet4{Port: port}
		copy(sa.Addr[:], ip4)
		return []bindTarget{{family: windows.AF_INET, sa: sa}}, nil
	case kind == '6':
		if ip4 != nil && !ip.IsUnspecified() {
			return nil, &net.AddrError{Err: "non-IPv6 address", Addr: addr}
		}
		sa := &windows.SockaddrInet6{Port: port, ZoneId: zoneID(zone)}
		if ip4 == nil { // 0.0.0.0 with a "6" network means ::
			copy(sa.Addr[:], ip.To16())
		}
		return []bindTarget{{family: windows.AF_INET6, sa: sa, v6only: true}}, nil
	case wildcard:
		return []bindTarget{
			{family: windows.AF_INET6, sa: &windows.SockaddrInet6{Port: port}},
			{family: windows.AF_INET, sa: &windows.SockaddrInet4{Port: port}},
		}, nil
	default: // unsuffixed, with an IPv6 address
		sa := &windows.SockaddrInet6{Port: port, ZoneId: zoneID(zone)}
		copy(sa.Addr[:], ip.To16())
		return []bindTarget{{family: windows.AF_INET6, sa: sa}}, nil
	}
}
