//go:build unix

package proctest

import (
	"net"
	"time"
)

// ImpostorReady sends READY=1 (as another process of the service's user
// would) to the notify socket at path, as soon as it exists and again
// every few milliseconds, until stop is closed; it then sends the number
// of datagrams delivered to sent. A test of the rule that only the
// generation's own process is heard.
func ImpostorReady(path string, stop <-chan struct{}, sent chan<- int) {
	n := 0
	defer func() { sent <- n }()
	for {
		select {
		case <-stop:
			return
		case <-time.After(5 * time.Millisecond): // polls for the socket
		}
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			continue
		}
		if _, err := c.Write([]byte("READY=1\nSTATUS=impostor")); err == nil {
			n++
		}
		c.Close()
	}
}
