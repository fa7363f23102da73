//go:build unix

package supervisor

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/baton-go/baton/internal/handoff"
)

// privateSockets opens generation n's loopback sockets, one per public
// socket in --listen order: files to pass it (LISTEN_FDS, the public
// sockets' names), their addresses for the proxy, and what each stands for
// (contract.EnvProxiedListen). With the {port} placeholder the app binds
// its own: no file, the port is picked here.
//
// The sockets of a crashed generation (front.orphaned) are taken over when
// there are any; adopted is then that generation's entry, which the
// caller gives back (front.giveBack) if the start fails.
func (f *front) privateSockets(n int) (files []*os.File, names, addrs []string, standsFor string, port int, adopted *backendAddrs, err error) {
	cfg := &f.s.cfg
	if usesPortPlaceholder(cfg.Command) {
		// Picked by the kernel and released for the app to bind: another
		// process could take it in between (the start then fails and is
		// retried like any failed start).
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, nil, "", 0, nil, fmt.Errorf("picking a private port for generation %d: %w", n, err)
		}
		addr := ln.Addr().(*net.TCPAddr)
		ln.Close()
		return nil, nil, []string{addr.String()}, "", addr.Port, nil, nil
	}
	defer func() {
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			files = nil
		}
	}()
	var stands []string
	for _, l := range cfg.Listen {
		stands = append(stands, l.String())
	}
	if dead := f.orphaned(); dead != nil {
		// A crashed generation's sockets, with what the proxy queued there
		// meanwhile: this one serves them.
		for i, file := range dead.files {
			dup, err := handoff.DupFile(file, cfg.Listen[i].Name)
			if err != nil {
				f.giveBack(dead)
				return files, nil, nil, "", 0, nil, fmt.Errorf("taking over the sockets of a crashed generation: %w", err)
			}
			files = append(files, dup)
			names = append(names, cfg.Listen[i].Name)
		}
		return files, names, dead.addrs, strings.Join(stands, ","), 0, dead, nil
	}
	for _, l := range cfg.Listen {
		host := "127.0.0.1:0"
		if l.Network == "tcp6" {
			host = "[::1]:0"
		}
		ln, err := net.Listen("tcp", host)
		if err != nil {
			return files, nil, nil, "", 0, nil, fmt.Errorf("private socket of generation %d for %s: %w", n, l, err)
		}
		file, err := handoff.DupFile(ln.(syscall.Conn), l.Name)
		addr := ln.Addr().String()
		ln.Close()
		if err != nil {
			return files, nil, nil, "", 0, nil, err
		}
		files = append(files, file)
		names = append(names, l.Name)
		addrs = append(addrs, addr)
	}
	return files, names, addrs, strings.Join(stands, ","), 0, nil, nil
}

// publicListeners are the public sockets as listeners the proxy serves.
func (h *host) publicListeners() ([]net.Listener, error) {
	var lns []net.Listener
	for i, f := range h.files {
		ln, err := net.FileListener(f)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("--listen %s: %w", h.cfg.Listen[i], err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}
