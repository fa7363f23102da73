package supervisor

import (
	"context"
	"errors"
	"io"
)

// ErrGaveUp: the app kept failing to start or crashing.
var ErrGaveUp = errors.New("the app keeps failing; giving up")

// Run is not available on Windows yet: there the supervisor runs as a
// Windows service (a later step).
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	return errors.New("baton run is not supported on Windows yet")
}
