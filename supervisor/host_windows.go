package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/handoff"
)

// host is what the supervisor holds on Windows: the listening sockets,
// duplicated for every generation it starts (WSADuplicateSocket through the
// library's handoff: Windows has no socket activation, so generations are
// apps built on the baton library), and the job object that every
// generation lives in (handoff.SpawnConfig.Supervised).
type host struct {
	cfg     *Config
	sockets []*handoff.HeldSocket
}

func openHost(s *Supervisor) (*host, error) {
	h := &host{cfg: &s.cfg}
	sweepCopies(s)
	for _, l := range s.cfg.Listen {
		switch l.Network {
		case "tcp", "tcp4", "tcp6":
		default:
			h.close()
			return nil, fmt.Errorf("--listen %s: baton run on Windows owns tcp sockets only", l)
		}
		sock, err := handoff.ListenSocket(l.Network, l.Addr)
		if err != nil {
			h.close()
			return nil, fmt.Errorf("--listen %s: %w", l, err)
		}
		h.sockets = append(h.sockets, sock)
	}
	return h, nil
}

// sweepCopies removes the generations' saved copies that an earlier
// supervisor of this name left behind (it was killed, or a copy was still
// locked when it ended). The control endpoint is ours already: no other
// supervisor of this name runs; a copy that some process still runs stays
// (it cannot be deleted) and is replaced or swept later.
func sweepCopies(s *Supervisor) {
	ents, _ := os.ReadDir(s.runDir)
	for _, e := range ents {
		n, ok := strings.CutPrefix(e.Name(), s.cfg.Name+".gen")
		if !ok {
			continue
		}
		// NAME.genN.exe only (not another service's "NAME.genX.genN.exe").
		if n, ok = strings.CutSuffix(n, ".exe"); !ok || n == "" || strings.Trim(n, "0123456789") != "" {
			continue
		}
		p := filepath.Join(s.runDir, e.Name())
		if err := os.Remove(p); err != nil {
			s.log.Debug("stale copy of a generation not removed", "path", p, "err", err)
		}
	}
}

// items are the sockets as the next generation gets them: matched by the
// network and address the app asks Listen for.
func (h *host) items() []handoff.Item {
	var items []handoff.Item
	for i, sock := range h.sockets {
		l := h.cfg.Listen[i]
		items = append(items, sock.Item(handoff.FileDesc{Kind: handoff.KindListener, Network: l.Network, Addr: l.Addr}))
	}
	return items
}

func (h *host) close() {
	for _, s := range h.sockets {
		s.Close()
	}
}

// watchSignals: Ctrl+C (and Ctrl+Break, a console's close) stop; Windows
// has no upgrade signal (baton upgrade, or the service's control code).
func (s *Supervisor) watchSignals(ctx context.Context) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt)
	go func() {
		select {
		case <-ctx.Done():
		case sig := <-sigs:
			s.log.Info("stopping", "signal", sig.String())
			s.requestStop()
		}
	}()
	return func() { signal.Stop(sigs) }
}

// fingerprint identifies the file at the app's path (size, mtime), for
// --watch-binary.
func fingerprint(path string) string {
	p, err := exec.LookPath(path)
	if errors.Is(err, exec.ErrDot) {
		err = nil
	}
	if err != nil {
		return ""
	}
	fi, err := os.Stat(p)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano())
}

// runtimeDir holds the generations' binary copies: BATON_RUNTIME_DIR, else
// baton under the user's local application data (for a service account,
// its own profile), never a directory other users may write.
func runtimeDir() string {
	if d := os.Getenv(contract.EnvRuntimeDir); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "baton")
	}
	return filepath.Join(os.TempDir(), "baton")
}
