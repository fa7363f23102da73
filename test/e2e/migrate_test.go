//go:build linux

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/proctest"
)

// keepAliveConn is one client connection that sends non-retried POSTs.
type keepAliveConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string) *keepAliveConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAliveConn{c: c, br: bufio.NewReader(c)}
}

// post sends one POST on the connection and returns the answering pid and
// whether the server asked to close.
func (k *keepAliveConn) post(body string) (pid int, closing bool, err error) {
	_ = k.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(k.c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
		return 0, false, err
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return 0, false, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, false, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("status %d", resp.StatusCode)
	}
	pid, _ = strconv.Atoi(resp.Header.Get("X-Pid"))
	return pid, resp.Close, nil
}

// TestIdleConnsMoveToNewGeneration (issue 11): keep-alive connections that
// are idle at the handover are served by the new generation on the same
// TCP connection (no reconnect, no "Connection: close"), across several
// upgrades, in library mode and under baton run; their next POST, sent
// once the old generation is gone, never fails.
func TestIdleConnsMoveToNewGeneration(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	for _, mode := range []string{"library", "baton run"} {
		t.Run(mode, func(t *testing.T) {
			addr := freeAddr(t, "tcp")
			var svc *proctest.Service
			if mode == "library" {
				svc, _ = startHello(t, "migrate", "-addr", addr)
			} else {
				svc, _ = startSupervised(t, "migratesup", os.Environ(), "--listen", "tcp://"+addr, "--", bins["hello"], "-addr", addr, "-name", "")
			}
			testIdleConnsMove(t, svc, addr)
		})
	}
}

func testIdleConnsMove(t *testing.T, svc *proctest.Service, addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const conns = 50
	var cs []*keepAliveConn
	for i := 0; i < conns; i++ {
		k := dialKeepAlive(t, addr)
		pid, closing, err := k.post("first")
		if err != nil || pid != st.PID || closing {
			t.Fatalf("conn %d, first POST: pid %d (want %d), close %v, %v", i, pid, st.PID, closing, err)
		}
		cs = append(cs, k)
	}
	prev := st.PID
	tracker.Track(prev)
	for u := 1; u <= 3; u++ {
		rep, err := svc.Upgrade(ctx)
		if err != nil || rep.ExitCode != 0 || rep.Result == nil {
			t.Fatalf("upgrade %d: %+v %v", u, rep, err)
		}
		next := rep.Result.PID
		// The old generation drains at once: it has nothing but idle
		// connections, and passes them on.
		if _, err := tracker.WaitExit(ctx, prev); err != nil {
			t.Fatalf("upgrade %d: old generation %d: %v", u, prev, err)
		}
		for i, k := range cs {
			pid, closing, err := k.post("after-" + strconv.Itoa(u))
			if err != nil {
				t.Fatalf("upgrade %d, conn %d: POST on the idle connection failed: %v", u, i, err)
			}
			if pid != next || closing {
				t.Fatalf("upgrade %d, conn %d: answered by pid %d (close %v), want the new generation %d on the same connection", u, i, pid, closing, next)
			}
		}
		// Library: the new generation counts what its predecessor passed;
		// baton run: the supervisor counts what it relayed to it.
		if st, err := svc.Status(ctx); err != nil || st.ConnsTaken != conns {
			t.Fatalf("upgrade %d: status of the new generation: conns_taken %d (want %d), %v", u, st.ConnsTaken, conns, err)
		}
		prev = next
	}
}
