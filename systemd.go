package baton

import (
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/sdnotify"
	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// systemd integration: with Type=notify and NotifyAccess=all, each new
// generation announces itself as the main process; during an upgrade the
// service is "reloading" (Type=notify-reload wants MONOTONIC_USEC with it).

func notifyReady(log *slog.Logger, newMain bool, status string) {
	msg := "READY=1\nSTATUS=" + status
	if newMain {
		msg = "MAINPID=" + strconv.Itoa(os.Getpid()) + "\n" + msg
	}
	if _, err := daemon.SdNotify(false, msg); err != nil {
		log.Warn("sd_notify failed", "err", err)
	}
}

func notifyReloading(status string) {
	sdnotify.Reloading(status)
}

func notifyStopping() {
	daemon.SdNotify(false, "STOPPING=1")
}

// socketActivated returns the sockets systemd passed to this process
// (LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES), ready to be claimed by Listen and
// ListenPacket by their bound address. The variables are cleared so that
// they are not passed on.
func socketActivated(log *slog.Logger) []pooled {
	var out []pooled
	for _, f := range activation.Files(true) {
		p := pooled{file: f}
		if ln, err := net.FileListener(f); err == nil {
			p.local = ln.Addr()
			p.desc = handoff.FileDesc{Kind: handoff.KindListener, Network: p.local.Network(), Addr: p.local.String(), Name: f.Name()}
			ln.Close()
		} else if pc, err := net.FilePacketConn(f); err == nil {
			p.local = pc.LocalAddr()
			p.desc = handoff.FileDesc{Kind: handoff.KindPacket, Network: p.local.Network(), Addr: p.local.String(), Name: f.Name()}
			pc.Close()
		} else {
			p.desc = handoff.FileDesc{Kind: handoff.KindFile, Name: f.Name()}
		}
		log.Info("socket from systemd activation", "kind", p.desc.Kind, "addr", p.desc.Addr, "name", p.desc.Name)
		out = append(out, p)
	}
	return out
}
