package contract

// Environment variables that pass between processes: a parent (a baton
// generation, the supervisor, the activator) sets them for the child it
// starts, and the child reads them once and drops those meant only for it.
const (
	// EnvHandoff: where a child started by a baton parent finds its handoff
	// channel (a file descriptor number on Unix, a pipe name on Windows).
	EnvHandoff = "BATON_HANDOFF"
	// EnvLink: the path of a supervised generation's link to its supervisor.
	EnvLink = "BATON_LINK"
	// EnvSupervisor: set by baton run for its generations, to the service's name.
	EnvSupervisor = "BATON_SUPERVISOR"
	// EnvGeneration: a supervised generation's number.
	EnvGeneration = "BATON_GENERATION"
	// EnvDrainSignal: the signal (its number) by which the supervisor asks a
	// generation to drain.
	EnvDrainSignal = "BATON_DRAIN_SIGNAL"
	// EnvProxiedListen: set by baton run --proxy: for each socket of
	// LISTEN_FDS in order, the public socket it stands for
	// ("tcp://127.0.0.1:8080", "unix:///run/app.sock"; empty for one that
	// stands for none), separated by commas. A generation's sockets are
	// private loopback ones behind baton's proxy; a library app asking for
	// the public address gets the private socket standing for it.
	EnvProxiedListen = "BATON_PROXIED_LISTEN"
	// EnvRuntimeDir: where control endpoints live (overrides
	// $XDG_RUNTIME_DIR/baton and the defaults).
	EnvRuntimeDir = "BATON_RUNTIME_DIR"
)

// systemd's socket activation, readiness and watchdog protocol (sd_listen_fds(3),
// sd_notify(3)), spoken by baton run to its generations.
const (
	EnvListenPID     = "LISTEN_PID"
	EnvListenFDs     = "LISTEN_FDS"
	EnvListenFDNames = "LISTEN_FDNAMES"
	EnvNotifySocket  = "NOTIFY_SOCKET"
	EnvWatchdogUSec  = "WATCHDOG_USEC"
	EnvWatchdogPID   = "WATCHDOG_PID"
)
