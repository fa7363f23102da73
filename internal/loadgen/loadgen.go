// Package loadgen generates HTTP and UDP load against a local service and
// records every single failure, to prove that hot upgrades drop nothing.
//
// It deliberately does not use http.Client: net/http's Transport silently
// re-sends idempotent requests whose reused connection failed, which would
// hide exactly the failures we are looking for. Here each request is written
// by hand on a net.Conn and read with http.ReadResponse; nothing is ever
// retried, and anything short of a complete 2xx response counts as a failure.
//
// Traffic is only ever sent to loopback addresses (or unix sockets).
package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is a client behaviour.
type Kind string

// Client kinds.
const (
	KeepAliveGET  Kind = "keepalive-get"  // GET / on a persistent connection
	KeepAlivePOST Kind = "keepalive-post" // POST / with a small body on a persistent connection
	Fresh         Kind = "fresh"          // a new TCP connection per request (alternate GET and POST), Connection: close
	Slow          Kind = "slow"           // GET /sleep?ms=SlowMS on a persistent connection
	// UDP labels failures of the UDP prober; it is not a valid Config.Workers key.
	UDP Kind = "udp"
)

// Defaults applied by Start for zero Config fields.
const (
	DefaultSlowMS      = 1500
	DefaultPause       = 2 * time.Millisecond
	DefaultTimeout     = 10 * time.Second
	DefaultMaxRequests = 10_000_000
	maxFailures        = 100
)

// Config configures Start.
type Config struct {
	Network     string        // "tcp" (default) or "unix"
	Addr        string        // host:port (loopback only) or socket path
	Workers     map[Kind]int  // number of concurrent clients per kind
	SlowMS      int           // sleep requested by Slow clients; default 1500
	Pause       time.Duration // pause between requests of one worker (not Slow); 0 = 2ms, negative = none
	Timeout     time.Duration // per-request timeout covering dial, write and read; default 10s
	MaxRequests int64         // bound on requests issued over all workers; default 10 million
	// Stagger spreads the workers' first requests evenly over this span
	// (worker i of n starts after i*Stagger/n), so that clients with a
	// long Pause do not all send at the same instant; 0 = all at once.
	Stagger time.Duration
}

// Load is a running load generator.
type Load struct {
	cfg   Config
	host  string // Host header
	start time.Time

	halt     chan struct{} // closed: issue no new requests
	haltOnce sync.Once
	done     chan struct{} // closed once every worker has exited
	end      time.Time     // written before done is closed
	wg       sync.WaitGroup
	issued   atomic.Int64

	kinds map[Kind]*kindStats // fixed after Start

	mu       sync.Mutex
	pids     map[int]*PIDStats
	newPID   chan struct{} // closed and replaced whenever a new pid shows up
	failures []Failure
}

type kindStats struct {
	mu     sync.Mutex
	ok     int64
	failed int64
	hist   histogram
}

// Start validates cfg and starts the workers. They stop issuing requests when
// ctx is done, Stop is called, or MaxRequests requests have been issued; a
// request already in flight is never cancelled, it completes or times out.
func Start(ctx context.Context, cfg Config) (*Load, error) {
	if cfg.Network == "" {
		cfg.Network = "tcp"
	}
	if cfg.Network != "tcp" && cfg.Network != "tcp4" && cfg.Network != "tcp6" && cfg.Network != "unix" {
		return nil, fmt.Errorf("loadgen: unsupported network %q", cfg.Network)
	}
	if err := checkAddr(cfg.Network, cfg.Addr); err != nil {
		return nil, err
	}
	if cfg.SlowMS <= 0 {
		cfg.SlowMS = DefaultSlowMS
	}
	if cfg.Pause == 0 {
		cfg.Pause = DefaultPause
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = DefaultMaxRequests
	}
	total := 0
	for k, n := range cfg.Workers {
		switch k {
		case KeepAliveGET, KeepAlivePOST, Fresh, Slow:
		default:
			return nil, fmt.Errorf("loadgen: unknown kind %q", k)
		}
		if n < 0 {
			return nil, fmt.Errorf("loadgen: negative worker count for %s", k)
		}
		total += n
	}
	if total == 0 {
		return nil, errors.New("loadgen: no workers configured")
	}

	l := &Load{
		cfg:    cfg,
		host:   cfg.Addr,
		start:  time.Now(),
		halt:   make(chan struct{}),
		done:   make(chan struct{}),
		kinds:  make(map[Kind]*kindStats),
		pids:   make(map[int]*PIDStats),
		newPID: make(chan struct{}),
	}
	if cfg.Network == "unix" {
		l.host = "localhost"
	}
	// Build the stats map completely before any worker reads it.
	for k, n := range cfg.Workers {
		if n > 0 {
			l.kinds[k] = &kindStats{}
		}
	}
	i := 0
	for k, n := range cfg.Workers {
		for range n {
			w := &worker{l: l, kind: k, reqs: l.requests(k), br: bufio.NewReader(nil)}
			if cfg.Stagger > 0 {
				w.delay = time.Duration(int64(cfg.Stagger) * int64(i) / int64(total))
			}
			i++
			l.wg.Add(1)
			go w.run()
		}
	}
	go func() {
		select {
		case <-ctx.Done():
			l.stopIssuing()
		case <-l.halt:
		}
	}()
	go func() {
		l.wg.Wait()
		l.end = time.Now()
		close(l.done)
		l.stopIssuing() // releases the ctx watcher
	}()
	return l, nil
}

// Stop stops issuing requests, waits for in-flight requests to complete or
// time out (they are not cancelled) and returns the final report. It may be
// called more than once.
func (l *Load) Stop() Report {
	l.stopIssuing()
	<-l.done
	return l.Snapshot()
}

// Done is closed once every worker has exited (after Stop, ctx cancellation
// or MaxRequests).
func (l *Load) Done() <-chan struct{} { return l.done }

// Snapshot returns the report so far; workers keep running.
func (l *Load) Snapshot() Report {
	r := Report{Start: l.start, ByKind: make(map[Kind]KindStats, len(l.kinds))}
	select {
	case <-l.done:
		r.Duration = l.end.Sub(l.start)
	default:
		r.Duration = time.Since(l.start)
	}
	for k, s := range l.kinds {
		s.mu.Lock()
		r.ByKind[k] = KindStats{
			OK: s.ok, Failed: s.failed,
			P50: s.hist.quantile(0.50), P99: s.hist.quantile(0.99), Max: time.Duration(s.hist.max),
		}
		s.mu.Unlock()
	}
	l.mu.Lock()
	r.PIDs = make(map[int]PIDStats, len(l.pids))
	for p, s := range l.pids {
		r.PIDs[p] = *s
	}
	r.Failures = append([]Failure(nil), l.failures...)
	l.mu.Unlock()
	return r
}

// FirstSeen returns the time of the first successful response carrying X-Pid == pid.
func (l *Load) FirstSeen(pid int) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.pids[pid]; ok {
		return s.First, true
	}
	return time.Time{}, false
}

// LastSeen returns the time of the latest successful response carrying X-Pid == pid.
func (l *Load) LastSeen(pid int) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.pids[pid]; ok {
		return s.Last, true
	}
	return time.Time{}, false
}

// WaitPID blocks until a successful response from pid has arrived and returns
// its FirstSeen time. It fails when ctx is done or all workers have exited
// without seeing pid.
func (l *Load) WaitPID(ctx context.Context, pid int) (time.Time, error) {
	for {
		l.mu.Lock()
		s, ok := l.pids[pid]
		ch := l.newPID
		l.mu.Unlock()
		if ok {
			return s.First, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("loadgen: waiting for pid %d: %w", pid, ctx.Err())
		case <-l.done:
			if t, ok := l.FirstSeen(pid); ok {
				return t, nil
			}
			return time.Time{}, fmt.Errorf("loadgen: load stopped before pid %d answered", pid)
		}
	}
}

func (l *Load) stopIssuing() { l.haltOnce.Do(func() { close(l.halt) }) }

func (l *Load) halted() bool {
	select {
	case <-l.halt:
		return true
	default:
		return false
	}
}

// pause sleeps d unless halted first; it reports whether to carry on.
func (l *Load) pause(d time.Duration) bool {
	if d <= 0 {
		return !l.halted()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.halt:
		return false
	case <-t.C:
		return true
	}
}

func (l *Load) success(k Kind, lat time.Duration, at time.Time, pid int, version string) {
	s := l.kinds[k]
	s.mu.Lock()
	s.ok++
	s.hist.add(lat)
	s.mu.Unlock()
	if pid <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.pids[pid]
	if !ok {
		p = &PIDStats{First: at}
		l.pids[pid] = p
		close(l.newPID)
		l.newPID = make(chan struct{})
	}
	p.Responses++
	if sent := at.Add(-lat); sent.After(p.LastSent) {
		p.LastSent = sent
	}
	if at.After(p.Last) {
		p.Last = at
		p.Version = version
	}
}

func (l *Load) fail(k Kind, phase string, err error, pid int) {
	s := l.kinds[k]
	s.mu.Lock()
	s.failed++
	s.mu.Unlock()
	l.mu.Lock()
	if len(l.failures) < maxFailures {
		l.failures = append(l.failures, Failure{Kind: k, At: time.Now(), Phase: phase, Err: err.Error(), PID: pid})
	}
	l.mu.Unlock()
}

const postBody = "baton loadgen says hello\n"

// requests returns the raw request(s) a worker of kind k sends, in rotation.
func (l *Load) requests(k Kind) [][]byte {
	get := func(path, extra string) []byte {
		return []byte("GET " + path + " HTTP/1.1\r\nHost: " + l.host + "\r\nUser-Agent: baton-loadgen\r\n" + extra + "\r\n")
	}
	post := func(extra string) []byte {
		return []byte("POST / HTTP/1.1\r\nHost: " + l.host + "\r\nUser-Agent: baton-loadgen\r\n" +
			"Content-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(postBody)) + "\r\n" + extra + "\r\n" + postBody)
	}
	switch k {
	case KeepAlivePOST:
		return [][]byte{post("")}
	case Fresh:
		return [][]byte{get("/", "Connection: close\r\n"), post("Connection: close\r\n")}
	case Slow:
		return [][]byte{get("/sleep?ms="+strconv.Itoa(l.cfg.SlowMS), "")}
	default:
		return [][]byte{get("/", "")}
	}
}

// worker is one sequential client. It owns at most one connection.
type worker struct {
	l       *Load
	kind    Kind
	reqs    [][]byte
	n       int
	conn    net.Conn
	br      *bufio.Reader
	connPID int           // X-Pid of the last response on conn, 0 if none
	delay   time.Duration // before the first request (Config.Stagger)
}

func (w *worker) run() {
	defer w.l.wg.Done()
	defer w.closeConn()
	if w.delay > 0 && !w.l.pause(w.delay) {
		return
	}
	for i := 0; ; i++ {
		if i > 0 && w.kind != Slow {
			if !w.l.pause(w.l.cfg.Pause) {
				return
			}
		}
		if w.l.halted() || w.l.issued.Add(1) > w.l.cfg.MaxRequests {
			return
		}
		w.do()
	}
}

func (w *worker) closeConn() {
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
		w.connPID = 0
	}
}

// do performs exactly one request attempt and records its outcome.
func (w *worker) do() {
	l := w.l
	// A server may close an idle keep-alive connection after a complete
	// response; that is legitimate, so notice it before sending, not after.
	if w.conn != nil && peerClosed(w.conn, w.br) {
		w.closeConn()
	}
	start := time.Now()
	deadline := start.Add(l.cfg.Timeout)
	if w.conn == nil {
		d := net.Dialer{Deadline: deadline, Control: loopbackControl}
		c, err := d.Dial(l.cfg.Network, l.cfg.Addr)
		if err != nil {
			l.fail(w.kind, "dial", err, 0)
			return
		}
		w.conn = c
		w.br.Reset(c)
	}
	req := w.reqs[w.n%len(w.reqs)]
	w.n++
	pid := w.connPID
	failed := func(phase string, err error) {
		l.fail(w.kind, phase, err, pid)
		w.closeConn()
	}
	if err := w.conn.SetDeadline(deadline); err != nil {
		failed("write", err)
		return
	}
	if _, err := w.conn.Write(req); err != nil {
		failed("write", err)
		return
	}
	// Peek first so that "closed without a single byte of response" is
	// reported as such (ReadResponse turns it into a bare unexpected EOF).
	if _, err := w.br.Peek(1); err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("connection closed without response")
		}
		failed("read", err)
		return
	}
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil {
		failed("read", err)
		return
	}
	if p, err := strconv.Atoi(resp.Header.Get("X-Pid")); err == nil {
		pid = p
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		failed("read", fmt.Errorf("body: %w", err))
		return
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		failed("status", fmt.Errorf("HTTP %s", resp.Status))
		return
	}
	end := time.Now()
	l.success(w.kind, end.Sub(start), end, pid, resp.Header.Get("X-Version"))
	w.connPID = pid
	if resp.Close || w.kind == Fresh {
		w.closeConn()
	}
}
