//go:build linux

// Package rig is what make faults and make soak share: the binaries built
// once, examples/hello started as a library service or under `baton run`
// and driven through the real `baton` CLI, the non-retrying load, a probe
// that tells when the port is dark, and how failed requests are told.
package rig

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proctest"
)

// Mode is how the service runs.
type Mode string

const (
	Library Mode = "library"   // hello's own upgrader (the library)
	Run     Mode = "baton run" // hello under the supervisor
)

// Target is one binary to build: a package with extra flags and
// environment (GOARCH for a wrong-arch binary).
type Target struct {
	Pkg   string
	Flags []string
	Env   []string
}

// Env is a run's shared setup: the built binaries, the runtime directory,
// the process tracker.
type Env struct {
	Root    string // module root
	Dir     string // working directory of the run (removed by Close)
	Bins    map[string]string
	Tracker *proctest.Tracker
}

// NewEnv builds targets (two at a time: the machine may be small) into a
// new working directory and points BATON_RUNTIME_DIR into it.
func NewEnv(targets map[string]Target) (*Env, error) {
	root, err := proctest.ModuleRoot()
	if err != nil {
		return nil, err
	}
	// Short: unix socket paths are limited to ~104 bytes.
	dir, err := os.MkdirTemp("", "bflt")
	if err != nil {
		return nil, err
	}
	e := &Env{Root: root, Dir: dir, Bins: map[string]string{}}
	os.Setenv(contract.EnvRuntimeDir, filepath.Join(dir, "run"))
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for name, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			out := filepath.Join(dir, name)
			args := append([]string{"build", "-o", out}, t.Flags...)
			cmd := exec.Command("go", append(args, t.Pkg)...)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), t.Env...)
			b, err := cmd.CombinedOutput()
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("go build %s (%s): %v\n%s", t.Pkg, name, err, b)
			}
			e.Bins[name] = out
		}()
	}
	wg.Wait()
	if firstErr != nil {
		os.RemoveAll(dir)
		return nil, firstErr
	}
	e.Tracker = proctest.NewTracker()
	return e, nil
}

// Close kills whatever is still running and removes the working directory.
func (e *Env) Close() {
	for _, pid := range e.Tracker.Live() {
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	e.Tracker.Close()
	os.RemoveAll(e.Dir)
}

// RuntimeDir is where the control sockets are.
func (e *Env) RuntimeDir() string { return os.Getenv(contract.EnvRuntimeDir) }

// Svc is one running service.
type Svc struct {
	*proctest.Service
	Mode      Mode
	Addr      string
	Installed string // the path upgrades start
	Dir       string
	LogPath   string
	SupPID    int // the supervisor (Run), 0 in Library mode
	env       *Env
	log       *os.File
}

// Opts configures Start.
type Opts struct {
	Bin       string   // what is installed first (default hello-v1)
	Hello     []string // hello's arguments (besides -addr and -name)
	Run       []string // baton run's flags (besides --name and --listen)
	Dir       string   // the directory of the installed binary (default a new one)
	Wrap      []string // command that wraps the first generation (library mode) or the supervisor (baton run), e.g. unshare ...
	ExtraEnv  []string
	StartWait time.Duration // default 30s
}

// Start installs o.Bin and starts it as the service name in mode m, and
// waits until it serves.
func (e *Env) Start(ctx context.Context, m Mode, name string, o Opts) (*Svc, error) {
	if o.Bin == "" {
		o.Bin = e.Bins["hello-v1"]
	}
	dir := o.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp(e.Dir, name+"-"); err != nil {
			return nil, err
		}
	}
	installed := filepath.Join(dir, "app")
	if err := CopyFile(o.Bin, installed); err != nil {
		return nil, err
	}
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "service.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	env := append(os.Environ(), o.ExtraEnv...)
	hello := append([]string{"-addr", addr}, o.Hello...)
	wait := o.StartWait
	if wait <= 0 {
		wait = 30 * time.Second
	}
	sctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var svc *proctest.Service
	if m == Run {
		args := append([]string{"run", "--name", name, "--listen", "tcp://" + addr}, o.Run...)
		args = append(append(args, "--", installed), hello...)
		bin := e.Bins["baton"]
		if len(o.Wrap) > 0 {
			// SupPID is then the wrapper's pid (its child is the supervisor).
			bin = o.Wrap[0]
			args = append(append(append([]string{}, o.Wrap[1:]...), e.Bins["baton"]), args...)
		}
		svc, err = proctest.Start(sctx, e.Tracker, e.Bins["baton"], name, env, logf, bin, args...)
	} else {
		args := append([]string{"-name", name}, hello...)
		bin := installed
		if len(o.Wrap) > 0 {
			bin = o.Wrap[0]
			args = append(append(append([]string{}, o.Wrap[1:]...), installed), args...)
		}
		svc, err = proctest.Start(sctx, e.Tracker, e.Bins["baton"], name, env, logf, bin, args...)
	}
	if err != nil {
		logf.Close()
		b, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("%v\n%s", err, tail(b, 3000))
	}
	s := &Svc{Service: svc, Mode: m, Addr: addr, Installed: installed, Dir: dir, LogPath: logPath, env: e, log: logf}
	if m == Run {
		s.SupPID = svc.Cmd.Process.Pid
	}
	if st, err := s.Status(ctx); err == nil {
		e.Tracker.Track(st.PID)
	}
	return s, nil
}

// Serving is the pid of the serving generation (0 when none answers).
func (s *Svc) Serving(ctx context.Context) int {
	st, err := s.Status(ctx)
	if err != nil {
		return 0
	}
	s.env.Tracker.Track(st.PID)
	return st.PID
}

// Stop stops the service (baton stop, then signals) and waits until every
// process of the run has exited; the log is closed.
func (s *Svc) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stop := exec.CommandContext(ctx, s.env.Bins["baton"], "stop", "--name", s.Name, "--timeout", "20s")
	stop.Env = s.Env
	if err := stop.Run(); err != nil {
		if s.SupPID > 0 {
			syscall.Kill(s.SupPID, syscall.SIGTERM)
		} else if pid := s.Serving(ctx); pid > 0 {
			syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	for _, pid := range s.env.Tracker.Live() {
		if _, err := s.env.Tracker.WaitExit(ctx, pid); err != nil && pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	s.log.Close()
}

// Gone closes the log of a service already stopped by other means (a
// case's own baton stop): Stop would signal pids that may be reused.
func (s *Svc) Gone() { s.log.Close() }

// LogTail is the end of the service's output.
func (s *Svc) LogTail(n int) string {
	b, _ := os.ReadFile(s.LogPath)
	return tail(b, n)
}

// Install replaces the installed binary with src (by rename: the running
// generation's text is never written to).
func (s *Svc) Install(src string) error { return CopyFile(src, s.Installed) }

// CopyFile copies src to dst through a temporary file and a rename, mode 0755.
func CopyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// FreeAddr is a loopback TCP address that was free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// POSTLoad is the faults' load: clients that never retry, POST on
// keep-alive connections and a fresh connection per request (GET and
// POST in turn).
func POSTLoad(ctx context.Context, addr string, keepAlive, fresh int) (*loadgen.Load, error) {
	w := map[loadgen.Kind]int{loadgen.KeepAlivePOST: keepAlive}
	if fresh > 0 {
		w[loadgen.Fresh] = fresh
	}
	return loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: w, MaxRequests: 5_000_000, Timeout: 10 * time.Second})
}

// WaitAnswers waits until pid has answered n more requests of load than
// it had when called: it still serves.
func WaitAnswers(ctx context.Context, load *loadgen.Load, pid int, n int64) bool {
	before := load.Snapshot().PIDs[pid].Responses
	for {
		if load.Snapshot().PIDs[pid].Responses >= before+n {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// AnsweredSince lists the pids that answered a request after t, with
// their version, most answers first.
func AnsweredSince(r loadgen.Report, t time.Time) []string {
	type pv struct {
		pid int
		v   string
		n   int64
	}
	var out []pv
	for pid, s := range r.PIDs {
		if s.Last.After(t) {
			out = append(out, pv{pid, s.Version, s.Responses})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].n > out[j].n })
	var ss []string
	for _, p := range out {
		ss = append(ss, fmt.Sprintf("%d (%s)", p.pid, p.v))
	}
	return ss
}

// Failed says how many requests failed, by kind, and how (from the first
// ones the load recorded): "0", or "3: keepalive-post 2, fresh 1 (read:
// connection reset by peer 3)".
func Failed(r loadgen.Report) string {
	total := r.TotalFailed()
	if total == 0 {
		return "0"
	}
	var kinds []string
	for _, k := range []loadgen.Kind{loadgen.KeepAliveGET, loadgen.KeepAlivePOST, loadgen.Fresh, loadgen.Slow} {
		if s, ok := r.ByKind[k]; ok && s.Failed > 0 {
			kinds = append(kinds, fmt.Sprintf("%s %d", k, s.Failed))
		}
	}
	how := map[string]int{}
	for _, f := range r.Failures {
		e := f.Err
		if i := strings.LastIndex(e, ": "); i >= 0 {
			e = e[i+2:]
		}
		how[f.Phase+": "+e]++
	}
	var hs []string
	for h, n := range how {
		hs = append(hs, fmt.Sprintf("%s %d", h, n))
	}
	sort.Strings(hs)
	s := fmt.Sprintf("%d: %s", total, strings.Join(kinds, ", "))
	if len(hs) > 0 {
		first := ""
		if int64(len(r.Failures)) < total {
			first = fmt.Sprintf("first %d: ", len(r.Failures))
		}
		s += " (" + first + strings.Join(hs, "; ") + ")"
	}
	return s
}

// Prober dials the port every couple of milliseconds and counts the
// refused connections: the port is dark when nothing listens on it (a
// listening socket whose accept queue waits is not dark).
type Prober struct {
	addr           string
	dials, refused atomic.Int64
	firstRefused   atomic.Int64 // unix nanos, 0: never
	lastRefused    atomic.Int64
	stop           chan struct{}
	done           chan struct{}
}

// StartProber starts probing addr (loopback only).
func StartProber(addr string) (*Prober, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("prober: %s is not a loopback address", addr)
	}
	p := &Prober{addr: addr, stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p, nil
}

func (p *Prober) loop() {
	defer close(p.done)
	for {
		select {
		case <-p.stop:
			return
		case <-time.After(2 * time.Millisecond):
		}
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		p.dials.Add(1)
		if err == nil {
			c.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			now := time.Now().UnixNano()
			p.refused.Add(1)
			p.firstRefused.CompareAndSwap(0, now)
			p.lastRefused.Store(now)
		}
	}
}

// Stop ends the probing and returns the dials made and how many were
// refused.
func (p *Prober) Stop() (dials, refused int64) {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	return p.dials.Load(), p.refused.Load()
}

// Refused is the count of refused dials so far.
func (p *Prober) Refused() int64 { return p.refused.Load() }

// FirstRefused is when the first dial was refused (zero: never).
func (p *Prober) FirstRefused() time.Time {
	if n := p.firstRefused.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// DarkFor is the time from the first to the last refused dial.
func (p *Prober) DarkFor() time.Duration {
	f, l := p.firstRefused.Load(), p.lastRefused.Load()
	if f == 0 {
		return 0
	}
	return time.Duration(l - f)
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	return !proctest.IsZombie(pid)
}

// GOARCHOther is a CPU architecture that is not this one.
func GOARCHOther() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}
