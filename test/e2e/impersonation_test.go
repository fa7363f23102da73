//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proctest"
)

// Another process of the service's user speaks on a generation's notify
// socket or link before the generation does. Linux tells the supervisor
// who sent a datagram (SCM_CREDENTIALS) and who connected (SO_PEERCRED):
// only the generation's own process counts.

// TestSupervisorIgnoresForeignReady: a release that hangs in its start-up
// while another process (this test) sends READY=1 on its notify socket is
// not taken as ready: the upgrade ends in a ready timeout, the old
// generation keeps serving, and no request fails.
func TestSupervisorIgnoresForeignReady(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir := t.TempDir()
	app := filepath.Join(dir, "hello")
	installCopy(t, bins["hello"], app)
	addr := freeAddr(t, "tcp")
	svc, logf := startSupervised(t, "supfready", os.Environ(), "--listen", "tcp://"+addr, "--ready-timeout", "3s",
		"--", app, "-addr", addr, "-idle-grace", "300ms")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{
		loadgen.KeepAliveGET: 2, loadgen.KeepAlivePOST: 2, loadgen.Fresh: 2}, MaxRequests: 2_000_000})
	if err != nil {
		t.Fatal(err)
	}
	installCopy(t, bins["hello-hang"], app)

	// READY=1 on generation 2's notify socket, from this process, as soon
	// as the socket is there and until the upgrade has an answer.
	notifyPath := filepath.Join(ctl.Dir(), "supfready.gen2.notify")
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go proctest.ImpostorReady(notifyPath, stop, sent)
	rep, err := svc.Upgrade(ctx)
	close(stop)
	if n := <-sent; n == 0 {
		t.Fatalf("no READY=1 reached %s: the test proves nothing", notifyPath)
	}
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.Code != contract.CodeReadyTimeout {
		t.Fatalf("upgrade to a release that never says ready, with READY=1 from another process: ok %v code %q: %s (want %s)",
			rep.OK, rep.Code, rep.Error, contract.CodeReadyTimeout)
	}
	now, err := svc.Status(ctx)
	if err != nil || now.PID != st.PID || now.Phase != "serving" {
		t.Fatalf("status after the refused readiness: %v %+v (want pid %d serving)", err, now, st.PID)
	}
	waitResponses(t, load, st.PID, 100) // the old generation goes on serving
	r := load.Stop()
	if r.TotalOK() == 0 || r.TotalFailed() != 0 {
		t.Fatalf("load: %s", r)
	}
	if ps := r.PIDs[st.PID]; ps.Responses != r.TotalOK() {
		t.Errorf("%d of %d responses came from the old generation (pid %d)", ps.Responses, r.TotalOK(), st.PID)
	}
	if b, _ := os.ReadFile(logf.Name()); !strings.Contains(string(b), "notify message from another process ignored") {
		t.Errorf("the supervisor did not log the ignored READY=1")
	}
}

// TestSupervisorLinkTakenFirst: another process (this test) connects to a
// generation's link before the generation does and says hello with the
// generation's pid. The supervisor refuses it and waits for the generation
// itself, which gets the state of the previous one.
func TestSupervisorLinkTakenFirst(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir := t.TempDir()
	// Once armed (after generation 1 runs), the app waits until the test
	// is on the link (at most 30 s) before it starts (the same process: sh
	// execs hello), so that the test is on the link first.
	armed, linked := filepath.Join(dir, "armed"), filepath.Join(dir, "impostor-linked")
	app := filepath.Join(dir, "slow-hello")
	script := fmt.Sprintf(`#!/bin/sh
i=0
while [ -e %q ] && [ ! -e %q ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done
exec %s "$@"
`, armed, linked, bins["hello"])
	if err := os.WriteFile(app, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t, "tcp")
	svc, logf := startSupervised(t, "suplinkfirst", os.Environ(), "--listen", "tcp://"+addr,
		"--", app, "-addr", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, _ := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{loadgen.Fresh: 1}, MaxRequests: 10})
	<-l.Done()
	if r := l.Stop(); r.TotalOK() != 10 {
		t.Fatalf("load: %s", r)
	}

	if err := os.WriteFile(armed, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	linkPath := filepath.Join(ctl.Dir(), "suplinkfirst.gen2.link")
	type result struct {
		pid int
		err error
	}
	impostor := make(chan result, 1)
	go func() {
		// The link socket is made before the generation starts; the
		// generation's pid is that of the process whose environment names
		// this link.
		var pid int
		if !pollUntil(20*time.Second, func() bool {
			pid = proctest.PIDWithEnv(contract.EnvLink + "=" + linkPath)
			return pid != 0
		}) {
			impostor <- result{0, fmt.Errorf("generation 2 (link %s) never seen", linkPath)}
			return
		}
		c, err := net.Dial("unix", linkPath)
		if err != nil {
			impostor <- result{pid, err}
			return
		}
		b, _ := json.Marshal(contract.LinkHello{Version: contract.LinkVersion, PID: pid})
		var frame bytes.Buffer
		binary.Write(&frame, binary.BigEndian, uint32(len(b)))
		frame.Write(b)
		_, err = c.Write(frame.Bytes())
		// The generation may start now: the test was on the link first.
		if ferr := os.WriteFile(linked, nil, 0o600); err == nil {
			err = ferr
		}
		// Hold the connection until the supervisor ends it (or a while):
		// whatever it sends is not ours to read.
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		io.Copy(io.Discard, c)
		c.Close()
		impostor <- result{pid, err}
	}()
	rep, err := svc.Upgrade(ctx)
	if err != nil || !rep.OK {
		t.Fatalf("upgrade with another process first on the link: %v %+v", err, rep)
	}
	imp := <-impostor
	if imp.err != nil {
		t.Fatalf("the impostor: %v", imp.err)
	}
	if imp.pid != rep.Result.PID {
		t.Fatalf("the impostor claimed pid %d, generation 2 is pid %d", imp.pid, rep.Result.PID)
	}
	if got := servedCount(t, addr); got < 10 {
		t.Fatalf("generation 2 counts %d served requests, want at least 10: the state did not travel", got)
	}
	if b, _ := os.ReadFile(logf.Name()); !strings.Contains(string(b), "link refused") {
		t.Errorf("the supervisor did not log the refused link")
	}
}

// servedCount asks hello's /state how many requests it counts (its own
// and those handed over as state).
func servedCount(t *testing.T, addr string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	body, _ := io.ReadAll(c)
	i := strings.Index(string(body), "served ")
	if i < 0 {
		t.Fatalf("no counter in %q", body)
	}
	var got int
	fmt.Sscan(string(body[i+len("served "):]), &got)
	return got
}
