package ctl

import (
	"context"
	"fmt"
	"net"
)

// Windows uses a named pipe; it lands with the Windows port.

// Address returns where the endpoint called name lives.
func Address(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	return `\\.\pipe\baton-` + name, nil
}

// Remove is a no-op on Windows: a pipe disappears with its last handle.
func Remove(name string) error { return nil }

func dial(ctx context.Context, name string) (net.Conn, error) {
	return nil, fmt.Errorf("%w (windows)", ErrUnsupported)
}

func checkPeer(c net.Conn) error { return fmt.Errorf("%w (windows)", ErrUnsupported) }

// Listen creates the control endpoint for name.
func Listen(name string) (net.Listener, error) {
	return nil, fmt.Errorf("%w (windows)", ErrUnsupported)
}
