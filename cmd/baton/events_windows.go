package main

import (
	"os"
	"path/filepath"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
)

// eventsDirs are the runtime directories where the events of the service
// name may be kept, the first one where a service started now would keep
// them: with BATON_RUNTIME_DIR, that directory only; else a library
// service's (ctl.Dir: %TEMP%\baton), baton run's (%LOCALAPPDATA%\baton,
// where it keeps its generations' copies) and the Windows service's
// (%ProgramData%\baton\NAME\run).
func eventsDirs(name string) []string {
	if d := os.Getenv(contract.EnvRuntimeDir); d != "" {
		return []string{d}
	}
	dirs := []string{ctl.Dir()}
	if d, err := os.UserCacheDir(); err == nil {
		dirs = append(dirs, filepath.Join(d, "baton"))
	}
	return append(dirs, filepath.Join(serviceDir(name), "run"))
}
