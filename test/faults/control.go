//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/test/faults/rig"
)

// The control endpoint and the port, abused: stop again and again,
// malformed control messages, idle half-open connections by the thousand.

// runtimeFiles lists what the runtime directory holds for the service
// called name (its control socket, its generations' files).
func (c *C) runtimeFiles() []string {
	ents, _ := os.ReadDir(c.env.RuntimeDir())
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), c.name+".") {
			out = append(out, e.Name())
		}
	}
	return out
}

// repeatedStop: n times, a service under load (under baton run after one
// upgrade: a second generation's files) is stopped with baton stop: it
// exits 0, nothing of the name is left in the runtime directory when it
// returns, every process of the run exits. No request may fail before the
// stop is asked; after it, failures are counted, not judged (the service
// ends: new connections are refused, a non-retrying client's next request
// on a keep-alive connection that the service closes may be cut).
func repeatedStop(c *C) Row {
	const n = 10
	exits := map[int]int{}
	leftAtReturn, leftAfter, stillRunning := 0, 0, 0
	var slowest time.Duration
	var before, after, refusedAfter int64
	var early []string
	var log string
	for range n {
		svc := c.start(rig.Opts{})
		l, _ := c.load(4, 2)
		if c.mode == rig.Run {
			if rep := c.upgrade(); !rep.OK {
				panic("upgrade: " + repStr(rep))
			}
		}
		stop := exec.CommandContext(c.ctx, c.env.Bins["baton"], "stop", "--name", c.name, "--timeout", "30s")
		stop.Env = svc.Env
		var out bytes.Buffer
		stop.Stdout, stop.Stderr = &out, &out
		t0 := time.Now()
		err := stop.Run()
		took := time.Since(t0)
		r := l.Stop()
		slowest = max(slowest, took)
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			panic(err)
		}
		exits[code]++
		if len(c.runtimeFiles()) > 0 {
			leftAtReturn++
		}
		wctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
		for _, pid := range c.env.Tracker.Live() {
			if _, err := c.env.Tracker.WaitExit(wctx, pid); err != nil {
				stillRunning++
			}
		}
		cancel()
		if len(c.runtimeFiles()) > 0 {
			leftAfter++
		}
		// Failures are recorded in order (the first 100): those before t0
		// are all there.
		var bef int64
		for _, f := range r.Failures {
			if f.At.Before(t0) {
				bef++
				early = append(early, fmt.Sprintf("%s %s %s %v before the stop", f.Kind, f.Phase, f.Err, t0.Sub(f.At).Round(time.Millisecond)))
			}
		}
		before += bef
		after += r.TotalFailed() - bef
		refusedAfter += int64(countRefusedAfter(r, t0))
		svc.Gone()
		c.svc = nil
		if code != 0 || stillRunning > 0 {
			log = fmt.Sprintf("baton stop exit %d: %s\n%s", code, out.String(), svc.LogTail(2500))
			break
		}
	}
	failed := fmt.Sprintf("%d before a stop was asked; after: %d (refused connections among those recorded: %d; expected: the service stops)", before, after, refusedAfter)
	if len(early) > 0 {
		log += "failures before the stop:\n" + strings.Join(early, "\n") + "\n"
	}
	exitStr := []string{}
	for code, k := range exits {
		exitStr = append(exitStr, fmt.Sprintf("%d× exit %d", k, code))
	}
	return Row{
		Observed: fmt.Sprintf("%d stops: %s, slowest %v; names left in the runtime dir when stop returned: %d, after exit: %d; processes still running: %d",
			n, strings.Join(exitStr, ", "), slowest.Round(10*time.Millisecond), leftAtReturn, leftAfter, stillRunning),
		Failed: failed,
		Pass:   exits[0] == n && leftAtReturn == 0 && leftAfter == 0 && stillRunning == 0 && before == 0,
		Log:    log,
	}
}

// countRefusedAfter counts the recorded failures that were connections
// refused after t.
func countRefusedAfter(r loadgen.Report, t time.Time) int {
	n := 0
	for _, f := range r.Failures {
		if f.At.After(t) && f.Phase == "dial" && strings.Contains(f.Err, "connection refused") {
			n++
		}
	}
	return n
}

// malformed control messages: none may make anything happen (no stop, no
// upgrade); each gets an error answer (or, for one too long, the
// connection ends).
var malformed = []struct {
	name string
	msg  func() []byte
}{
	{"random bytes", func() []byte {
		b := make([]byte, 4096)
		rand.Read(b)
		return append(bytes.ReplaceAll(b, []byte("\n"), nil), '\n')
	}},
	{"truncated JSON", func() []byte { return []byte(`{"baton":1,"op":"status"` + "\n") }},
	{"cut mid-line", func() []byte { return []byte(`{"baton":1,"op":"upg`) }},
	{"other version", func() []byte { return []byte(`{"baton":99,"op":"upgrade"}` + "\n") }},
	{"unknown op", func() []byte { return []byte(`{"baton":1,"op":"format-disk"}` + "\n") }},
	{"wrong types", func() []byte { return []byte(`{"baton":"1","op":7,"binary":[]}` + "\n") }},
	{"NUL bytes", func() []byte { return []byte("\x00\x00\x00\x10{\"baton\":1}\n") }},
	{"100k nesting", func() []byte { return []byte(`{"baton":1,"op":` + strings.Repeat("[", 100_000) + "\n") }},
	{"2 MiB line", func() []byte { return append(bytes.Repeat([]byte("a"), 2<<20), '\n') }},
	{"empty line", func() []byte { return []byte("\n") }},
	{"JSON null", func() []byte { return []byte("null\n") }},
}

// sendRaw writes msg on a new connection to the control socket, ends its
// side and reads the one answer line.
func sendRaw(ctx context.Context, sock string, msg []byte) (contract.Response, error) {
	var resp contract.Response
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return resp, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	go func() { // the service may stop reading (and answer) before the end
		conn.Write(msg)
		conn.(*net.UnixConn).CloseWrite()
	}()
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return resp, err
	}
	return resp, json.Unmarshal(line, &resp)
}

func malformedControl(c *C) Row {
	svc := c.start(rig.Opts{})
	l, pid0 := c.load(4, 2)
	sock := filepath.Join(c.env.RuntimeDir(), c.name+".sock")
	answers := map[string]int{}
	bad := 0
	for _, m := range malformed {
		resp, err := sendRaw(c.ctx, sock, m.msg())
		switch {
		case err != nil:
			answers["no answer ("+short(err.Error())+")"]++
			if m.name != "2 MiB line" {
				bad++
			}
		case resp.OK:
			answers["ok (!)"]++
			bad++
		default:
			answers[resp.Code]++
		}
	}
	st, err := svc.Status(c.ctx)
	statusOK := err == nil && st.PID == pid0 && st.Last == nil
	serves := c.stillServes(l, pid0)
	rep := c.upgrade()
	serves2 := rep.OK && c.stillServes(l, rep.Result.PID)
	r := l.Stop()
	return Row{
		Observed: fmt.Sprintf("%d messages answered: %s; then status: pid %d, no upgrade ran: %v; then baton upgrade %s",
			len(malformed), outcomeStr(answers), st.PID, statusOK, repStr(rep)),
		Failed: rig.Failed(r),
		Pass:   bad == 0 && statusOK && serves && rep.OK && serves2 && r.TotalFailed() == 0,
	}
}

// slowloris holds 2,000 idle half-open connections (a request begun and
// never finished) to the control endpoint or to the service's port while
// the load runs, status is asked and an upgrade is made; then waits for
// the service to close them.
func slowloris(target string) func(c *C) Row {
	return func(c *C) Row {
		const n = 2000
		svc := c.start(rig.Opts{})
		l, pid0 := c.load(4, 2)
		network, addr, partial := "tcp", svc.Addr, []byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n")
		if target == "control" {
			network, addr, partial = "unix", filepath.Join(c.env.RuntimeDir(), c.name+".sock"), []byte(`{"baton":1,"op":"sta`)
		}
		var conns []net.Conn
		var dialErr error
		defer func() {
			for _, conn := range conns {
				conn.Close()
			}
		}()
		for range n {
			conn, err := net.DialTimeout(network, addr, 5*time.Second)
			if err != nil {
				dialErr = err
				break
			}
			conns = append(conns, conn)
			conn.Write(partial)
		}
		held := time.Now()
		// Each connection's end, as the service closes it.
		var mu sync.Mutex
		var closedLast time.Time
		closed := 0
		var wg sync.WaitGroup
		for _, conn := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn.SetReadDeadline(time.Now().Add(40 * time.Second))
				var b [512]byte
				for {
					if _, err := conn.Read(b[:]); err != nil {
						var ne net.Error
						if errors.As(err, &ne) && ne.Timeout() {
							return
						}
						mu.Lock()
						closed++
						closedLast = time.Now()
						mu.Unlock()
						return
					}
				}
			}()
		}
		t0 := time.Now()
		st, err := svc.Status(c.ctx)
		statusTook := time.Since(t0)
		statusOK := err == nil && st.PID == pid0
		rep := c.upgrade()
		upgraded := rep.OK && c.stillServes(l, rep.Result.PID)
		wg.Wait()
		r := l.Stop()
		dialed := fmt.Sprintf("%d held", len(conns))
		if dialErr != nil {
			dialed += " (then: " + short(dialErr.Error()) + ")"
		}
		return Row{
			Observed: fmt.Sprintf("%s; status answered in %v; baton upgrade %s after %v; closed by the service: %d, the last %v after they were opened",
				dialed, statusTook.Round(time.Millisecond), repStr(rep), rep.Returned.Sub(rep.Triggered).Round(10*time.Millisecond), closed, closedLast.Sub(held).Round(100*time.Millisecond)),
			Failed: rig.Failed(r),
			Pass:   len(conns) == n && statusOK && statusTook < 5*time.Second && upgraded && closed == n && r.TotalFailed() == 0,
		}
	}
}
