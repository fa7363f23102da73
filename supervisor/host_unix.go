//go:build unix

package supervisor

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/unixsock"
)

// host is what the supervisor holds on Unix: the sockets (fd 3.. in every
// generation, by socket activation), the spawner and the orphan guard.
type host struct {
	cfg      *Config
	runDir   string
	files    []*os.File
	fdNames  []string
	spawner  *spawner
	watchdog *watchdog // nil with GuardPdeathsig
}

func openHost(s *Supervisor) (*host, error) {
	h := &host{cfg: &s.cfg, runDir: s.runDir, spawner: newSpawner()}
	// The control endpoint is ours already (New took it): no other
	// supervisor of this name runs, so what its generations left in the
	// runtime directory belongs to one that was killed.
	sweepGenFiles(h.runDir, s.cfg.Name)
	if s.cfg.OrphanGuard == GuardWatchdog {
		w, err := startWatchdog(s.cfg.Activator)
		if err != nil {
			return nil, err
		}
		h.watchdog = w
	}
	if err := h.bind(); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

// bind opens the sockets the supervisor owns for its whole life.
func (h *host) bind() error {
	for _, l := range h.cfg.Listen {
		var f *os.File
		switch l.Network {
		case "tcp", "tcp4", "tcp6", "unix":
			if l.Network == "unix" {
				unixsock.RemoveStale(l.Addr)
			}
			ln, err := net.Listen(l.Network, l.Addr)
			if err != nil {
				return fmt.Errorf("--listen %s: %w", l, err)
			}
			if ul, ok := ln.(*net.UnixListener); ok {
				ul.SetUnlinkOnClose(false)
			}
			// DupFile, not File: File's *os.File switches the shared socket
			// to blocking mode when exec asks for its descriptor, which
			// would leave a serving generation stuck in accept().
			f, err = handoff.DupFile(ln.(syscall.Conn), l.String())
			ln.Close()
			if err != nil {
				return err
			}
		default:
			if l.Network == "unixgram" {
				unixsock.RemoveStale(l.Addr)
			}
			pc, err := net.ListenPacket(l.Network, l.Addr)
			if err != nil {
				return fmt.Errorf("--listen %s: %w", l, err)
			}
			f, err = handoff.DupFile(pc.(syscall.Conn), l.String())
			pc.Close()
			if err != nil {
				return err
			}
		}
		h.files = append(h.files, f)
		h.fdNames = append(h.fdNames, l.Name)
	}
	return nil
}

func (h *host) close() {
	for _, f := range h.files {
		f.Close()
	}
	for _, l := range h.cfg.Listen {
		if l.Network == "unix" || l.Network == "unixgram" {
			os.Remove(l.Addr)
		}
	}
	if h.watchdog != nil {
		h.watchdog.close()
	}
	// Every generation has ended (Run closes the host last): their saved
	// binaries and notify and link sockets go with them.
	sweepGenFiles(h.runDir, h.cfg.Name)
}

// sweepGenFiles removes the files the generations of the service called
// name keep in the runtime directory: NAME.genN.bin (the saved binary),
// NAME.genN.notify and NAME.genN.link (their sockets). Only that name's:
// another service's "NAME.genX.genN.bin" is left alone.
func sweepGenFiles(dir, name string) {
	if dir == "" || name == "" {
		return
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if isGenFile(e.Name(), name) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// isGenFile reports whether file is NAME.genN.{bin,notify,link}.
func isGenFile(file, name string) bool {
	n, ok := strings.CutPrefix(file, name+".gen")
	if !ok {
		return false
	}
	for _, suf := range []string{".bin", ".notify", ".link"} {
		if m, ok := strings.CutSuffix(n, suf); ok {
			return m != "" && strings.Trim(m, "0123456789") == ""
		}
	}
	return false
}

// watchSignals: SIGHUP upgrades, SIGTERM and SIGINT stop.
func (s *Supervisor) watchSignals(ctx context.Context) (stop func()) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-sigs:
				if sig != syscall.SIGHUP {
					s.log.Info("stopping", "signal", sig.String())
					s.requestStop()
					return
				}
				go s.upgradeBySignal(ctx)
			}
		}
	}()
	return func() { signal.Stop(sigs) }
}

// fingerprint identifies the file at the app's path (inode, size, mtime),
// for --watch-binary.
func fingerprint(path string) string {
	p, err := exec.LookPath(path)
	if err != nil {
		return ""
	}
	fi, err := os.Stat(p)
	if err != nil {
		return ""
	}
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = uint64(st.Ino)
	}
	return fmt.Sprintf("%d/%d/%d", ino, fi.Size(), fi.ModTime().UnixNano())
}

// runtimeDir holds the generations' notify and link sockets and binary
// copies: the control endpoint's directory (0700).
func runtimeDir() string { return ctl.Dir() }
