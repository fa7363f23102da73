//go:build !unix

package handoff

import "net"

// preparedConns, where no descriptor is duplicated ahead of the send:
// send does all of sendConns's work (a failure there may leave the
// channel out of step, which PassConns treats as such).
type preparedConns struct{ conns []net.Conn }

func prepareConns(conns []net.Conn) (*preparedConns, error) {
	return &preparedConns{conns: conns}, nil
}

func (p *preparedConns) send(ch net.Conn) error { return sendConns(ch, p.conns) }

func (p *preparedConns) close() {}
