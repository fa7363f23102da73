// Package winpipe provides Windows named pipes as a net.Listener and
// net.Conns, built on golang.org/x/sys/windows only. Baton's control
// endpoint (internal/ctl) and the Windows parent/child handoff channel
// (internal/handoff) both use it.
//
// Why not go-winio: its ListenPipe hangs forever under Wine (it relies on a
// placeholder-instance behaviour of NT that Wine lacks), and we want the
// Windows code to be testable under Wine.
//
// What it offers: Listen creates a listener (any number of listeners, in
// one process or in several, may hold instances of the same name at once,
// as during a handover between generations); Dial connects, retrying for a
// moment while the pipe is busy or absent; ClientPID identifies the client
// of an accepted connection; OwnerOnlySDDL is a security descriptor that
// admits only the current user, SYSTEM and Administrators; ServerPID
// identifies the server of a dialed connection.
//
// On the wire, the server writes one byte, a space, into every connection
// it accepts, before anything else (the greeting); Dial consumes it. A
// client that talks to the pipe without Dial sees it first.
//
// On systems other than Windows the package is empty.
package winpipe
