package loadgen

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// checkAddr refuses anything but loopback targets up front, so a typo in a
// demo or bench command can never send load to another machine.
func checkAddr(network, addr string) error {
	switch network {
	case "unix":
		if addr == "" {
			return fmt.Errorf("loadgen: empty unix socket path")
		}
		return nil
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
	default:
		return fmt.Errorf("loadgen: unsupported network %q", network)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("loadgen: bad address %q: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Unmap().IsLoopback() {
		return fmt.Errorf("loadgen: refusing non-loopback address %q (only 127.0.0.0/8, ::1 or localhost)", addr)
	}
	return nil
}

// loopbackControl is a net.Dialer Control hook that checks the resolved
// address right before connecting; it also covers names such as "localhost"
// that might resolve somewhere unexpected.
func loopbackControl(network, address string, _ syscall.RawConn) error {
	if strings.HasPrefix(network, "unix") {
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("loadgen: bad resolved address %q: %w", address, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Unmap().IsLoopback() {
		return fmt.Errorf("loadgen: refusing to connect to non-loopback address %q", address)
	}
	return nil
}
