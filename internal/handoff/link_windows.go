package handoff

import (
	"context"
	"os"
	"time"
)

// LinkConn is one end of a supervisor link. There is no supervisor on
// Windows yet (the service manager takes that part later), so no link.
type LinkConn struct{}

// Close does nothing.
func (l *LinkConn) Close() error { return nil }

// DialLink returns nils without EnvLink, ErrUnsupported with it.
func DialLink(time.Duration, int64) (*LinkConn, *Handed, error) {
	if _, ok := os.LookupEnv(EnvLink); !ok {
		return nil, nil, nil
	}
	return nil, nil, linkErr("%v", ErrUnsupported)
}

// Serve returns ErrUnsupported.
func (l *LinkConn) Serve(func() (*Handed, error), func()) error { return ErrUnsupported }

// Broken is always true: there is no link.
func (l *LinkConn) Broken() bool { return true }

// Drain returns ErrUnsupported.
func (l *LinkConn) Drain(context.Context) error { return ErrUnsupported }
