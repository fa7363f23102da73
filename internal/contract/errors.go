// Package contract is what baton's processes agree on: the error sentinels
// and their wire codes (with the one mapping from errors to codes and the
// one mapping from codes to the CLI's exit codes), the control protocol's
// and the supervisor link's message types, and the names of the
// environment variables that pass between a parent and its children.
//
// Everything that crosses a process boundary is defined here once; the
// packages that move the bytes (internal/ctl, internal/handoff) and those
// that act on them (the library, the supervisor, the CLI) import it.
package contract

import "errors"

// Sentinel errors. The public baton package re-exports those a caller of
// the library can meet; test them with errors.Is.
var (
	ErrBusy            = errors.New("an upgrade is already in progress")
	ErrTooManyDraining = errors.New("too many generations still draining")
	ErrNotReady        = errors.New("this generation is not ready yet")
	ErrStopped         = errors.New("this generation is draining or stopped")
	ErrSupervised      = errors.New("supervised by baton run: upgrades are run by the supervisor")

	ErrChildExited   = errors.New("new generation exited before it was ready")
	ErrReadyTimeout  = errors.New("new generation did not become ready in time")
	ErrVersion       = errors.New("handoff protocol version not supported")
	ErrRefused       = errors.New("new generation refused the handoff")
	ErrAborted       = errors.New("upgrade aborted by the parent")
	ErrCanceled      = errors.New("upgrade canceled")
	ErrParentGone    = errors.New("parent generation vanished during the handoff")
	ErrBinary        = errors.New("binary cannot be started")
	ErrUnsupported   = errors.New("not supported on this platform")
	ErrStateTooLarge = errors.New("state blob too large")
	ErrStateCorrupt  = errors.New("state blob corrupt")
	ErrNoState       = errors.New("the serving generation could not hand over its state")
	ErrLink          = errors.New("supervisor link")

	ErrRolledBack = errors.New("upgrade rolled back")
	ErrNoPrevious = errors.New("no previous generation")
	ErrGaveUp     = errors.New("the app keeps failing; giving up")

	ErrCanaryFailed = errors.New("canary failed its analysis; rolled back")
	ErrNoCanary     = errors.New("no canary under way (see baton upgrade --canary)")
)
