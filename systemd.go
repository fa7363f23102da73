package baton

import (
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/baton-go/baton/internal/contract"
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
	standsFor := proxiedListen(os.Getenv(contract.EnvProxiedListen))
	os.Unsetenv(contract.EnvProxiedListen)
	for i, f := range activation.Files(true) {
		p := pooled{file: f}
		if i < len(standsFor) {
			p.standsFor = standsFor[i]
		}
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
		if p.standsFor != nil {
			log.Info("private socket behind baton's proxy", "kind", p.desc.Kind, "addr", p.desc.Addr, "name", p.desc.Name, "stands_for", p.standsFor.Network()+"://"+p.standsFor.String())
		} else {
			log.Info("socket from systemd activation", "kind", p.desc.Kind, "addr", p.desc.Addr, "name", p.desc.Name)
		}
		out = append(out, p)
	}
	return out
}

// proxiedListen parses contract.EnvProxiedListen: per socket, the public
// address it stands for (nil for none, or one that does not parse).
func proxiedListen(v string) []net.Addr {
	if v == "" {
		return nil
	}
	var out []net.Addr
	for _, e := range strings.Split(v, ",") {
		var a net.Addr
		if network, addr, ok := strings.Cut(e, "://"); ok {
			switch network {
			case "tcp", "tcp4", "tcp6":
				if t, err := net.ResolveTCPAddr(network, addr); err == nil {
					a = t
				}
			case "unix":
				a = &net.UnixAddr{Net: network, Name: addr}
			}
		}
		out = append(out, a)
	}
	return out
}
