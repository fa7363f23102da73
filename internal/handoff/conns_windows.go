package handoff

import (
	"errors"
	"net"
	"os"
)

// connsSupported: not yet on Windows (it would take WSADuplicateSocket for
// the child's pid, as for listeners); a Windows child never says
// TakesConns, so its parent drains every connection itself.
const connsSupported = false

var errConnsWindows = errors.New("passing client connections is not supported on Windows yet")

// FileConn returns a connection serving the socket f, a connection passed
// by a previous generation. Not on Windows yet.
func FileConn(*os.File) (net.Conn, error) { return nil, errConnsWindows }

func sendConns(net.Conn, []net.Conn) error { return errConnsWindows }

func sendFiles(net.Conn, []*os.File) error { return errConnsWindows }

func recvConns(net.Conn, int) ([]*os.File, error) { return nil, errConnsWindows }
