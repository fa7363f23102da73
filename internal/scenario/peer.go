package scenario

import (
	"bytes"
	"context"
	"fmt"
	"github.com/baton-go/baton/internal/contract"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-go/baton/internal/proctest"
)

// PeerTableflip is Config.Peer for test/bench/peers/tableflip: the hello
// behaviour upgraded by cloudflare/tableflip, drained by
// http.Server.Shutdown.
const PeerTableflip = "tableflip"

// PeerBatonSignal is Config.Peer for examples/hello upgraded the same way
// as the peer, by SIGHUP to the pid in its PID file (the library's upgrade
// signal): the like-for-like comparison of switch times, without the
// `baton upgrade` CLI's own start in the figure.
const PeerBatonSignal = "baton-sighup"

// signalApp is an app upgraded by SIGHUP.
type signalApp struct {
	dir     string // its module directory, relative to baton's module root
	pkg     string // the package to build, in dir
	refusal string // what it logs when it refuses an upgrade
	args    func(addr, pidFile string, cfg Config) []string
}

// signalApps: each peer is its own Go module so that baton does not depend
// on it.
var signalApps = map[string]signalApp{
	PeerTableflip: {
		dir: filepath.Join("test", "bench", "peers", "tableflip"), pkg: ".",
		refusal: "Upgrade failed:", // the wording of tableflip's own example
		args: func(addr, pidFile string, cfg Config) []string {
			return []string{"-addr", addr, "-pidfile", pidFile, "-drain-timeout", peerDrainTimeout(cfg).String()}
		},
	},
	PeerBatonSignal: {
		dir: ".", pkg: "./examples/hello",
		refusal: "upgrade by signal failed",
		args: func(addr, pidFile string, cfg Config) []string {
			return []string{"-name", "bench-sighup", "-addr", addr, "-pidfile", pidFile, "-idle-grace", cfg.IdleGrace.String(),
				"-drain-timeout", cfg.DrainTimeout.String(), "-startup-delay", cfg.StartupDelay.String()}
		},
	},
}

// runPeer is Run for cfg.Peer: the peer app serves the same load; each
// upgrade is a SIGHUP to the pid in its PID file (the trigger time is when
// the signal is sent). The new generation is known from the PID file
// (tableflip writes it in Ready) and its first response is taken from the
// load, as for baton. A SIGHUP that the peer refuses (tableflip allows no
// upgrade until the previous old generation has exited) is counted in
// Result.Refused, and triggers go on at the same interval until
// cfg.Upgrades upgrades are done or 6 times as many signals were sent.
func runPeer(ctx context.Context, cfg Config, say func(string, ...any)) (*Result, error) {
	app, ok := signalApps[cfg.Peer]
	if !ok {
		return nil, fmt.Errorf("scenario: unknown peer %q", cfg.Peer)
	}
	root, err := proctest.ModuleRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "baton-peer")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	say("building %s (%s in %s) ...", cfg.Peer, app.pkg, filepath.ToSlash(app.dir))
	bins, err := proctest.Build(filepath.Join(root, app.dir), dir, map[string]string{
		"peer-v1": app.pkg, "peer-v2": app.pkg,
	}, map[string][]string{
		"peer-v1": {"-ldflags", "-X main.buildVersion=v1"},
		"peer-v2": {"-ldflags", "-X main.buildVersion=v2"},
	})
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}

	tracker := proctest.NewTracker()
	defer tracker.Close()
	logPath := filepath.Join(dir, "peer.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	installed := filepath.Join(dir, "installed-peer")
	if err := copyFile(bins["peer-v1"], installed); err != nil {
		return nil, err
	}
	pidFile := filepath.Join(dir, "peer.pid")
	// tableflip re-executes os.Args[0], so the installed path is what each
	// upgrade starts, as for hello.
	cmd := exec.Command(installed, app.args(addr, pidFile, cfg)...)
	cmd.Env = append(os.Environ(), contract.EnvRuntimeDir+"="+filepath.Join(dir, "run")) // a control endpoint of its own
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	tracker.Track(cmd.Process.Pid) // reaped by the tracker, as are the generations it adopts
	current := cmd.Process.Pid
	defer func() {
		// Stop the newest generation (it drains like an old one), then
		// make sure that no generation outlives the run.
		if pid, err := readPID(pidFile); err == nil {
			current = pid
		}
		if p, err := os.FindProcess(current); err == nil {
			p.Signal(syscall.SIGTERM)
		}
		reapAll(tracker, peerDrainTimeout(cfg)+5*time.Second)
	}()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = waitPeer(sctx, tracker, pidFile, logPath, app.refusal, 0, 0)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%s peer did not start: %w", cfg.Peer, err)
	}
	say("%s peer serving on http://%s (pid %d)", cfg.Peer, addr, current)

	load, err := startLoad(ctx, addr, cfg)
	if err != nil {
		return nil, err
	}
	defer load.Stop()
	warmup(cfg)

	res := &Result{}
	var ups []pending
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for len(ups) < cfg.Upgrades && res.Triggers < 6*cfg.Upgrades {
		<-tick.C
		version := []string{"v2", "v1"}[len(ups)%2]
		if err := copyFile(bins["peer-"+version], installed); err != nil {
			return nil, err
		}
		st, err := os.Stat(logPath)
		if err != nil {
			return nil, err
		}
		p, err := os.FindProcess(current)
		if err != nil {
			return nil, err
		}
		triggered := time.Now()
		if err := p.Signal(syscall.SIGHUP); err != nil {
			return nil, fmt.Errorf("SIGHUP to pid %d: %w", current, err)
		}
		res.Triggers++
		wctx, wcancel := context.WithTimeout(ctx, 70*time.Second) // tableflip's upgrade timeout is 1 minute
		out, err := waitPeer(wctx, tracker, pidFile, logPath, app.refusal, current, st.Size())
		wcancel()
		if err != nil {
			return nil, fmt.Errorf("SIGHUP %d: %w", res.Triggers, err)
		}
		if out.refused != "" {
			res.Refused++
			if res.RefusedWhy == "" {
				res.RefusedWhy = out.refused
			}
			say("SIGHUP %3d to pid %d refused: %s", res.Triggers, current, out.refused)
			continue
		}
		tracker.Track(out.pid)
		seen, err := load.WaitPID(ctx, out.pid)
		if err != nil {
			return nil, err
		}
		u := Upgrade{OldPID: current, NewPID: out.pid, Switch: seen.Sub(triggered)}
		say("upgrade %2d (SIGHUP %3d): install %s, pid %d -> %d, first response from the new pid after %v",
			len(ups)+1, res.Triggers, version, current, u.NewPID, u.Switch.Round(100*time.Microsecond))
		ups = append(ups, pending{up: u, handover: out.at})
		current = out.pid
	}
	time.Sleep(cfg.Interval)
	res.Load = load.Stop()
	if res.Upgrades, err = settle(ctx, tracker, load, ups, peerDrainTimeout(cfg)+5*time.Second); err != nil {
		return nil, err
	}
	return res, nil
}

// peerOutcome is what became of a SIGHUP: a new ready generation (pid,
// seen in the PID file at at) or a refusal logged by the peer.
type peerOutcome struct {
	pid     int
	at      time.Time
	refused string
}

// waitPeer polls until the PID file names a pid other than old, or the
// peer logs a refusal after offset logFrom, or the newest generation (old)
// exits.
func waitPeer(ctx context.Context, t *proctest.Tracker, pidFile, logPath, refusal string, old int, logFrom int64) (peerOutcome, error) {
	var goneSince time.Time
	for {
		if pid, err := readPID(pidFile); err == nil && pid != old {
			return peerOutcome{pid: pid, at: time.Now()}, nil
		}
		if b, err := os.ReadFile(logPath); err == nil && int64(len(b)) > logFrom {
			if i := bytes.Index(b[logFrom:], []byte(refusal)); i >= 0 {
				line := b[logFrom+int64(i)+int64(len(refusal)):]
				if j := bytes.IndexByte(line, '\n'); j >= 0 {
					line = line[:j]
				}
				return peerOutcome{refused: strings.TrimSpace(string(line))}, nil
			}
		}
		if old != 0 && goneSince.IsZero() {
			if _, gone := t.Exited(old); gone {
				goneSince = time.Now()
			}
		}
		// The successor writes the PID file after its go-ahead; an old
		// generation with little to drain may exit before that.
		if !goneSince.IsZero() && time.Since(goneSince) > 2*time.Second {
			tail := ""
			if b, err := os.ReadFile(logPath); err == nil && int64(len(b)) > logFrom {
				tail = string(b[max(logFrom, int64(len(b))-3000):])
			}
			return peerOutcome{}, fmt.Errorf("pid %d exited and no successor wrote the PID file within 2s; its log since the signal:\n%s", old, tail)
		}
		select {
		case <-ctx.Done():
			return peerOutcome{}, fmt.Errorf("no new pid in %s and no refusal logged: %w", pidFile, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// peerDrainTimeout is the peer's drain deadline: cfg.DrainTimeout, or
// 30s (its default, as hello's) when that is not set.
func peerDrainTimeout(cfg Config) time.Duration {
	if cfg.DrainTimeout > 0 {
		return cfg.DrainTimeout
	}
	return 30 * time.Second
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
