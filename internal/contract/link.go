package contract

// The supervisor link (baton run, library apps): the frames a generation
// and its supervisor exchange; internal/handoff carries them and documents
// the exchange.

// LinkVersion is the version of the link protocol. A supervisor closes the
// link of a generation that speaks another one; the library then serves
// without the previous generation's state and is drained by signal.
const LinkVersion = 1

// Link operations (LinkRequest.Op).
const (
	LinkHandover  = "handover"   // send your state and named files
	LinkDrain     = "drain"      // stop accepting and drain (close Exit)
	LinkConnsPull = "conns_pull" // a draining generation: the next client connections you pass on, if any
	LinkConns     = "conns"      // the serving generation: serve these client connections
)

// LinkHello is a generation's first frame on its link.
type LinkHello struct {
	Version int `json:"v"`
	PID     int `json:"pid"`
	// Conns: this generation understands LinkConnsPull and LinkConns
	// (idle client connections passed from a draining generation to the
	// serving one through the supervisor).
	Conns bool `json:"conns,omitempty"`
}

// LinkRequest is the supervisor's request.
type LinkRequest struct {
	Op string `json:"op"`
	// LinkConns: the listener that accepted the connections, and how many
	// follow the frame. LinkConnsPull: Taken says how many of the
	// previous batch the serving generation took.
	Network string `json:"network,omitempty"`
	Addr    string `json:"addr,omitempty"`
	N       int    `json:"n,omitempty"`
	Taken   int    `json:"taken,omitempty"`
}

// LinkReply answers a LinkRequest. Code is a wire code: CodeState when the
// state could not be made, CodeProtocol for an unknown operation.
type LinkReply struct {
	OK    bool   `json:"ok"`
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
	// LinkConnsPull: N connections accepted on (Network, Addr) follow the
	// frame (none: nothing to pass now). LinkConns: how many were taken.
	Network string `json:"network,omitempty"`
	Addr    string `json:"addr,omitempty"`
	N       int    `json:"n,omitempty"`
	Taken   int    `json:"taken,omitempty"`
}
