package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/release"
)

// What a generation does the same way on every OS: its link to a library
// app (state, named files, drain), the copy of its binary kept for a
// rollback, and the HTTP health probe.

// genCommon is what a generation is on every OS; the per-OS generation
// (generation_unix.go, generation_windows.go) embeds it and adds how its
// process is started, told and ended.
type genCommon struct {
	s          *Supervisor
	n          int
	pid        int
	binary     string // the installed path it was started from
	saved      string // the copy it runs (kept for a rollback)
	sha256     string // of the saved copy; computed once it is ready (guarded by mu)
	started    time.Time
	readyAfter time.Duration

	mu   sync.Mutex
	link *handoff.LinkConn // library apps: state, named files and drain (guarded by mu)

	// Proxy mode (proxy.go, canary.go): its private sockets' addresses,
	// the canary plan of the upgrade that started it, and whether it took
	// a share of the traffic as a canary.
	privAddrs   []string
	privFiles   []*os.File // the supervisor's copies of its private sockets
	canary      *canaryRequest
	tookTraffic atomic.Bool
	retired     atomic.Bool // out of the proxy, its requests answered (or the wait given up)

	// Idle client connections the supervisor relayed (relayConns): to
	// this generation from older ones, and from this one at its drain.
	connsTaken, connsPassed atomic.Int64
}

func (g *genCommon) PID() int       { return g.pid }
func (g *genCommon) Binary() string { return g.binary }

// handles counts its open descriptors or handles (-1 if unknown).
func (g *genCommon) handles() int { return openFDs(g.pid) }

func (g *generation) binarySHA256() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sha256
}

var probeClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// httpOK asks rawURL's path from the generation's probe socket at addr
// (the Host header stays the one of rawURL).
func httpOK(ctx context.Context, rawURL, addr string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return false
	}
	req.URL.Host = addr
	req.URL.Scheme = "http"
	resp, err := probeClient.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}

// acceptLink waits for a library app's link (as long as the generation
// runs: an app may create its Upgrader late), gives it what the previous
// generation handed over and keeps the link for later requests. handed is
// closed here: the app has its own copies.
func (s *Supervisor) acceptLink(g *generation, ln *handoff.LinkListener, handed *handoff.Handed) {
	defer handed.Close()
	path := ln.Addr().String()
	defer os.Remove(path)
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-g.exited:
		case <-ctx.Done():
		}
		cancel()
	}()
	// A process other than the generation's own may connect first (the
	// kernel's peer pid says who connected; the generation's word is not
	// taken for it): it is refused and the supervisor goes on accepting,
	// as long as the generation runs, until the generation itself links.
	var link *handoff.LinkConn
	var warned time.Time
	refused := 0
	for link == nil {
		l, hello, err := handoff.AcceptLink(ctx, ln)
		switch {
		case ctx.Err() != nil:
			if l != nil {
				l.Close()
			}
			return
		case err == nil && hello.PID == g.pid:
			link = l
			continue
		case err == nil:
			// Only the app itself (the activator execs it, same pid) links up.
			l.Close()
			err = fmt.Errorf("link from another process (pid %d)", hello.PID)
		case errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), net.ErrClosed.Error()):
			s.log.Warn("generation's link closed before the generation linked", "gen", g.n, "pid", g.pid, "err", err)
			return
		}
		refused++
		if time.Since(warned) >= 10*time.Second {
			warned = time.Now()
			s.log.Warn("link refused; still waiting for the generation's own", "gen", g.n, "pid", g.pid, "err", err, "refused", refused)
			refused = 0
		}
		select {
		case <-time.After(time.Millisecond): // persistent accept errors do not spin
		case <-ctx.Done():
			return
		}
	}
	if handed == nil {
		handed = &handoff.Handed{}
	}
	handed.Msg.Generation = g.n
	handed.Msg.Parent = handoff.Self()
	handed.Msg.Binary = g.binary
	// We relay its client connections (relayConns). In proxy mode its
	// connections are the proxy's: with http the proxy stops using an old
	// generation's, with tcp each carries one client session, which goes
	// on in the next generation like any migrated connection.
	handed.Msg.Conns = link.PassesConns() && (s.front == nil || s.front.mode == ProxyTCP)
	// The link is recorded before it is given: the app can say it is
	// ready as soon as it has what it inherits, before Give returns here,
	// and a tcp-mode commit then looks for the link to pass connections
	// to it (addPasser); recorded after, the generation relayed for life.
	// Nothing uses the link before the Give: the link's exchanges queue
	// behind it, and only a ready generation gets any.
	g.mu.Lock()
	g.link = link
	g.mu.Unlock()
	if err := link.Give(handed); err != nil {
		s.log.Warn("handing over to the generation's link failed", "gen", g.n, "pid", g.pid, "err", err)
		link.Close() // broken: whoever took it sees that and does without
		return
	}
	go func() {
		<-g.exited
		link.Close()
	}()
	s.log.Debug("library generation linked", "gen", g.n, "pid", g.pid, "files", len(handed.Items), "state_bytes", len(handed.State))
}

func (g *generation) getLink() *handoff.LinkConn {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.link
}

// takeHandover asks the serving generation (a library app with a link) for
// its state and named files, for the generation about to start.
func (s *Supervisor) takeHandover(ctx context.Context, g *generation) (*handoff.Handed, error) {
	if g == nil {
		return nil, nil
	}
	link := g.getLink()
	if link == nil {
		return nil, nil
	}
	select {
	case <-g.exited:
		return nil, nil
	default:
	}
	if link.Broken() {
		// An earlier exchange failed (and that upgrade with it): going on
		// without the state beats never upgrading again.
		s.log.Warn("the serving generation's link failed earlier; the next generation starts without its state", "gen", g.n, "pid", g.pid)
		return nil, nil
	}
	h, err := link.Take(ctx)
	if err != nil {
		return nil, fmt.Errorf("generation %d (pid %d) did not hand over its state: %w", g.n, g.pid, err)
	}
	return h, nil
}

// release removes g's saved binary (once no rollback can need it).
func (g *generation) release() {
	if g.saved != "" {
		os.Remove(g.saved)
	}
}

// healthAddr is the address part of a health URL (after the switch the
// probe socket is gone: probation checks go through the service's own
// socket, where only the new generation accepts now).
func healthAddr(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return u.Host
}

// saveBinary keeps what a generation runs at dst: a hard link to src when
// both are on one file system (instant, whatever the binary's size), else a
// copy. A link stays the old file when a deploy renames a new binary into
// place (as baton install, baton upgrade --binary and package managers do);
// writing into the installed file in place fails with "text file busy" as
// for any running program.
func saveBinary(src, dst string) error {
	os.Remove(dst)
	// link(2) does not follow a symbolic link (Linux links the link
	// itself: /bin/sh -> dash would become a dangling relative link in the
	// runtime directory): save what it points to.
	if real, err := filepath.EvalSymlinks(src); err == nil {
		src = real
	}
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copyBinary(src, dst)
}

// copyBinary copies src to a new file dst, executable by its owner only.
func copyBinary(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o700)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}

// hashBinary computes the sha256 of what g runs, for status. It runs once
// g is ready: hashing a large binary would add to every switch.
func (g *generation) hashBinary() {
	sum, err := release.FileSHA256(g.saved)
	if err != nil {
		return
	}
	g.mu.Lock()
	g.sha256 = sum
	g.mu.Unlock()
}

// relayConns carries the idle client connections a draining library
// generation passes on (its HTTP drain gives them up instead of closing
// them) to the generation serving at that moment, until the draining one
// is gone (issue 11; handoff's linkconns.go). Each pull tells the draining
// generation how many of its previous batch were taken, so nothing is
// both kept and passed.
func (s *Supervisor) relayConns(old *generation) {
	link := old.getLink()
	if link == nil || !link.PassesConns() {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-old.exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	taken, total := 0, 0
	for ctx.Err() == nil {
		network, addr, files, err := link.PullConns(ctx, taken)
		if err != nil {
			break // gone, or the link failed: it keeps what it has
		}
		taken = 0
		if len(files) == 0 {
			continue
		}
		if cur := s.currentGen(); cur != nil && cur != old {
			if to := cur.getLink(); to != nil && to.PassesConns() {
				// Not the relay's context: the old generation's exit must not
				// cut an exchange with the serving one (its link would break).
				pctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				n, err := to.PassConns(pctx, network, addr, files)
				cancel()
				if err != nil {
					s.log.Warn("passing client connections to the serving generation failed; the old one keeps them", "from", old.pid, "to", cur.pid, "err", err)
				}
				taken = n
				cur.connsTaken.Add(int64(n))
				old.connsPassed.Add(int64(n))
			}
		}
		total += taken
		for _, f := range files {
			f.Close() // the serving generation has its own copies
		}
	}
	if total > 0 {
		s.log.Info("client connections moved to the serving generation", "from", old.pid, "conns", total)
	}
}
