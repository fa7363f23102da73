package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// UDPConfig configures StartUDP.
type UDPConfig struct {
	Addr      string        // host:port, loopback only
	Interval  time.Duration // pause between probes; default 20ms
	Timeout   time.Duration // wait for the matching answer; default 1s
	MaxProbes int64         // bound on probes sent; default 10 million
}

// UDPReport summarises a UDP prober.
type UDPReport struct {
	Start    time.Time
	Duration time.Duration
	OK       int64
	Failed   int64         // no answer, or a garbled one, within Timeout
	PIDs     map[int]int64 // answers per server pid
	Failures []Failure     // the first 100, Kind UDP
}

// String renders a one-line summary plus the first failures.
func (r UDPReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "udp %v: ok=%d failed=%d pids=%v\n", r.Duration.Round(time.Millisecond), r.OK, r.Failed, r.PIDs)
	writeFailures(&b, r.Start, r.Failures, r.Failed)
	return b.String()
}

// UDPLoad is a running UDP prober: one socket, one probe at a time.
type UDPLoad struct {
	cfg   UDPConfig
	conn  net.Conn
	start time.Time

	halt     chan struct{}
	haltOnce sync.Once
	done     chan struct{}
	end      time.Time

	mu         sync.Mutex
	ok, failed int64
	pids       map[int]int64
	failures   []Failure
}

// StartUDP starts probing cfg.Addr. Each probe sends "probe-<n>" and expects
// "pid=<pid> version=<v> probe-<n>" back; answers to earlier probes arriving
// late are ignored. Probing stops when ctx is done, Stop is called or
// MaxProbes have been sent; a probe in flight is waited for.
func StartUDP(ctx context.Context, cfg UDPConfig) (*UDPLoad, error) {
	if err := checkAddr("udp", cfg.Addr); err != nil {
		return nil, err
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 20 * time.Millisecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.MaxProbes <= 0 {
		cfg.MaxProbes = DefaultMaxRequests
	}
	d := net.Dialer{Control: loopbackControl}
	c, err := d.DialContext(ctx, "udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("loadgen: udp: %w", err)
	}
	u := &UDPLoad{
		cfg:   cfg,
		conn:  c,
		start: time.Now(),
		halt:  make(chan struct{}),
		done:  make(chan struct{}),
		pids:  make(map[int]int64),
	}
	go func() {
		select {
		case <-ctx.Done():
			u.stopIssuing()
		case <-u.halt:
		}
	}()
	go u.run()
	return u, nil
}

// Stop stops probing, waits for the probe in flight and returns the final report.
func (u *UDPLoad) Stop() UDPReport {
	u.stopIssuing()
	<-u.done
	return u.Snapshot()
}

// Done is closed once the prober has exited.
func (u *UDPLoad) Done() <-chan struct{} { return u.done }

// Snapshot returns the report so far.
func (u *UDPLoad) Snapshot() UDPReport {
	r := UDPReport{Start: u.start}
	select {
	case <-u.done:
		r.Duration = u.end.Sub(u.start)
	default:
		r.Duration = time.Since(u.start)
	}
	u.mu.Lock()
	r.OK, r.Failed = u.ok, u.failed
	r.PIDs = make(map[int]int64, len(u.pids))
	for p, n := range u.pids {
		r.PIDs[p] = n
	}
	r.Failures = append([]Failure(nil), u.failures...)
	u.mu.Unlock()
	return r
}

func (u *UDPLoad) stopIssuing() { u.haltOnce.Do(func() { close(u.halt) }) }

func (u *UDPLoad) run() {
	defer func() {
		u.conn.Close()
		u.end = time.Now()
		close(u.done)
		u.stopIssuing()
	}()
	buf := make([]byte, 2048)
	for n := int64(1); n <= u.cfg.MaxProbes; n++ {
		if n > 1 {
			t := time.NewTimer(u.cfg.Interval)
			select {
			case <-u.halt:
				t.Stop()
				return
			case <-t.C:
			}
		}
		select {
		case <-u.halt:
			return
		default:
		}
		u.probe(n, buf)
	}
}

// probe sends one probe and waits for its answer, recording exactly one outcome.
func (u *UDPLoad) probe(n int64, buf []byte) {
	payload := "probe-" + strconv.FormatInt(n, 10)
	if _, err := u.conn.Write([]byte(payload)); err != nil {
		u.fail("write", err)
		return
	}
	if err := u.conn.SetReadDeadline(time.Now().Add(u.cfg.Timeout)); err != nil {
		u.fail("read", err)
		return
	}
	var garbled string
	for {
		m, err := u.conn.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("no answer to %s within %v", payload, u.cfg.Timeout)
				if garbled != "" {
					err = fmt.Errorf("%w (ignored garbled datagram %q)", err, garbled)
				}
			}
			u.fail("read", err)
			return
		}
		msg := string(buf[:m])
		f := strings.Fields(msg)
		if len(f) == 0 || f[len(f)-1] != payload {
			if len(f) == 0 || !strings.HasPrefix(f[len(f)-1], "probe-") {
				garbled = msg
			}
			continue // late answer to an earlier probe, or noise: keep waiting
		}
		pid, err := 0, error(nil)
		if len(f) != 3 || !strings.HasPrefix(f[0], "pid=") || !strings.HasPrefix(f[1], "version=") {
			err = errors.New("bad format")
		} else if pid, err = strconv.Atoi(f[0][len("pid="):]); err == nil && pid <= 0 {
			err = errors.New("bad pid")
		}
		if err != nil {
			u.fail("answer", fmt.Errorf("garbled answer %q: %w", msg, err))
			return
		}
		u.mu.Lock()
		u.ok++
		u.pids[pid]++
		u.mu.Unlock()
		return
	}
}

func (u *UDPLoad) fail(phase string, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.failed++
	if len(u.failures) < maxFailures {
		u.failures = append(u.failures, Failure{Kind: UDP, At: time.Now(), Phase: phase, Err: err.Error()})
	}
}
