package metrics

import (
	"net"
	"os"
	"testing"

	"github.com/baton-go/baton/internal/contract"
)

// baton_connections counts the connections the serving generation
// accepted on the service's sockets (here: this process, two accepted
// connections; the dialled ends have other local ports and do not count).
func TestConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
	}
	src := &fake[contract.Status]{st: contract.Status{PID: os.Getpid(), Listeners: []string{"tcp " + ln.Addr().String()}}}
	c := NewCollector(src)
	defer c.Close()
	m := gather(t, c)
	want(t, m, 2, "baton_connections", "generation_role", "serving")
	want(t, m, 0, "baton_connections", "generation_role", "draining")
}
