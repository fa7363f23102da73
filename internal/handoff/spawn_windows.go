package handoff

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"
)

// Windows hands sockets over by WSADuplicateSocket; that lands with the
// Windows port. Until then every entry point says so clearly.

// Spawn starts the new generation with the items and sends it the handoff.
func Spawn(ctx context.Context, cfg SpawnConfig) (*Child, error) {
	return nil, fmt.Errorf("%w (windows)", ErrUnsupported)
}

// DupFile duplicates the socket behind sc for a child.
func DupFile(sc syscall.Conn, name string) (*os.File, error) {
	return nil, fmt.Errorf("%w (windows)", ErrUnsupported)
}

func openChannel() (net.Conn, error) {
	if _, ok := os.LookupEnv(EnvChannel); ok {
		return nil, fmt.Errorf("%w (windows)", ErrUnsupported)
	}
	return nil, nil
}

func inheritedFiles(descs []FileDesc) ([]*os.File, *os.File, error) {
	return nil, nil, fmt.Errorf("%w (windows)", ErrUnsupported)
}

func restoreStderr(f *os.File) error { return nil }

func guardStderrPipe() (undo func()) { return func() {} }
