//go:build !unix

package proxy

import "net"

// idleCheckable: idleConnUsable cannot tell here whether the backend closed an idle
// connection (no non-blocking peek): a request that cannot be sent twice
// takes a new connection instead.
const idleCheckable = false

func idleConnUsable(net.Conn) bool { return false }
