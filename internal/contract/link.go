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
	LinkHandover = "handover" // send your state and named files
	LinkDrain    = "drain"    // stop accepting and drain (close Exit)
)

// LinkHello is a generation's first frame on its link.
type LinkHello struct {
	Version int `json:"v"`
	PID     int `json:"pid"`
}

// LinkRequest is the supervisor's request.
type LinkRequest struct {
	Op string `json:"op"`
}

// LinkReply answers a LinkRequest. Code is a wire code: CodeState when the
// state could not be made, CodeProtocol for an unknown operation.
type LinkReply struct {
	OK    bool   `json:"ok"`
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}
