package supervisor

import (
	"context"
	"io"
	"testing"
)

// The package has one API on every OS: this file names every exported
// symbol, and `make test` vets (so compiles) the tests for linux, windows,
// darwin and freebsd. A symbol missing on one OS fails there.
var _ = []any{
	New, Run, ParseListen,
	(*Supervisor).Run, (*Supervisor).Serving, (*Supervisor).Stop, (*Supervisor).ReopenLog,
	(*Supervisor).Upgrade, (*Supervisor).Rollback, (*Supervisor).Status, (*Supervisor).Subscribe,
	(*Supervisor).HTTPControl, (*Supervisor).ServeHTTPControl, ReadTokenFile, CheckHTTPControlAddr,
	ErrTokenFile, ErrNotLoopback, HTTPControlConfig{},
	GuardPdeathsig, GuardWatchdog, PhaseRestarting,
	ErrGaveUp, ErrNoPrevious, ErrRolledBack,
	Config{}, ListenSpec{}, Readiness{}, Status{}, Info{}, GenInfo{}, LogsResult{}, LogLine{},
}

func TestNewRefusesBadConfig(t *testing.T) {
	if _, err := New(Config{}, io.Discard); err == nil {
		t.Fatal("New accepted a config without a name")
	}
	if err := Run(context.Background(), Config{Name: "x"}, io.Discard); err == nil {
		t.Fatal("Run accepted a config without an app")
	}
}
