package baton

import (
	"net"

	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/handoff"
)

// On Windows the control endpoint is a named pipe: each generation creates
// its own instances of the same name once it serves (the CLI retries for a
// moment when it finds no free instance), so nothing is handed over.
type pipeControl struct{ name string }

func openControlEndpoint(name string, inherited *pooled) (controlEndpoint, error) {
	return pipeControl{name}, nil
}

func (c pipeControl) listen() (net.Listener, error) { return ctl.Listen(c.name) }
func (c pipeControl) item() (handoff.Item, bool)    { return handoff.Item{}, false }
func (c pipeControl) close()                        {}
