package baton

import (
	"net"
	"testing"

	"github.com/baton-go/baton/internal/handoff"
)

// TestClaimByProxiedAddress: under baton run --proxy a private socket
// stands for a public one (BATON_PROXIED_LISTEN); the app asks for the
// public address and must get the private socket, whatever the private
// socket's own address is.
func TestClaimByProxiedAddress(t *testing.T) {
	stands := proxiedListen("tcp://:8080,tcp://127.0.0.1:9090,unix:///run/app.sock,,bogus")
	if len(stands) != 5 || stands[3] != nil || stands[4] != nil {
		t.Fatalf("proxiedListen: %v", stands)
	}
	private := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 41234}
	cases := []struct {
		standsFor     net.Addr
		network, addr string
		want          bool
	}{
		{stands[0], "tcp", ":8080", true},
		{stands[0], "tcp", "0.0.0.0:8080", true},
		{stands[0], "tcp", "127.0.0.1:8080", false}, // as for any socket: the address asked for
		{stands[0], "tcp", ":8081", false},
		{stands[1], "tcp", "127.0.0.1:9090", true},
		{stands[1], "tcp", ":9090", false},
		{stands[2], "unix", "/run/app.sock", true},
		{stands[2], "tcp", "127.0.0.1:41234", false}, // its private address is not what it stands for
	}
	for _, c := range cases {
		u := &Upgrader{pool: []pooled{{desc: handoff.FileDesc{Kind: handoff.KindListener, Network: "tcp", Addr: private.String()}, local: private, standsFor: c.standsFor}}}
		_, got := u.claim(handoff.FileDesc{Kind: handoff.KindListener, Network: c.network, Addr: c.addr})
		if got != c.want {
			t.Errorf("a private socket standing for %v, asked for %s %s: claimed %v, want %v", c.standsFor, c.network, c.addr, got, c.want)
		}
	}
}
