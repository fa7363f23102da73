//go:build unix

package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
	"github.com/baton-go/baton/internal/proctest"
)

// TestSystemdNotifyAndSocketActivation plays systemd: hello gets its
// listening socket by socket activation (LISTEN_FDS, LISTEN_PID) and a real
// datagram socket as NOTIFY_SOCKET. Upgrades under load must announce
// RELOADING=1 (with MONOTONIC_USEC), then MAINPID=<new pid> and READY=1;
// the activated socket is handed on; LISTEN_* do not leak to generation 2.
func TestSystemdNotifyAndSocketActivation(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir := t.TempDir()
	notifyPath := filepath.Join(workDir, "notify.sock")
	os.Remove(notifyPath)
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()

	bin := filepath.Join(dir, "hello")
	installCopy(t, bins["hello"], bin)
	// sh's $$ becomes hello's pid after exec: LISTEN_PID must name the
	// process the sockets are meant for.
	env := append(os.Environ(), "NOTIFY_SOCKET="+notifyPath, "LISTEN_FDS=1", "LISTEN_FDNAMES=web")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logf, _ := os.Create(filepath.Join(dir, "hello.log"))
	defer logf.Close()
	svc, err := startWithExtraFile(ctx, env, logf, lnFile, "exec env LISTEN_PID=$$ "+bin+" -name sd -addr "+addr+" -idle-grace 300ms")
	if err != nil {
		t.Fatal(err)
	}
	lnFile.Close()
	t.Cleanup(func() { stopService(t, svc) })

	expect := func(want ...string) string {
		t.Helper()
		for {
			select {
			case m := <-msgs:
				ok := true
				for _, w := range want {
					ok = ok && strings.Contains(m, w)
				}
				if ok {
					return m
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no sd_notify message with %q", want)
			}
		}
	}
	expect("READY=1")

	load, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Workers: map[loadgen.Kind]int{loadgen.KeepAlivePOST: 2, loadgen.Fresh: 2}, MaxRequests: 500_000})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		rep, err := svc.Upgrade(ctx)
		if err != nil || !rep.OK {
			t.Fatalf("upgrade: %v %+v", err, rep)
		}
		m := expect("RELOADING=1")
		if !strings.Contains(m, "MONOTONIC_USEC=") {
			t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", m)
		}
		expect("MAINPID="+strconv.Itoa(rep.Result.PID), "READY=1")
		if _, err := load.WaitPID(ctx, rep.Result.PID); err != nil {
			t.Fatal(err)
		}
		env, err := os.ReadFile("/proc/" + strconv.Itoa(rep.Result.PID) + "/environ")
		if err == nil && strings.Contains(string(env), "LISTEN_") {
			t.Errorf("generation %d inherited LISTEN_* variables", rep.Result.PID)
		}
	}
	r := load.Stop()
	if r.TotalFailed() != 0 {
		t.Fatalf("load: %s", r)
	}
}

func startWithExtraFile(ctx context.Context, env []string, logf *os.File, f *os.File, script string) (*proctest.Service, error) {
	return proctest.StartCmd(ctx, tracker, bins["baton"], "sd", env, logf, []*os.File{f}, "/bin/sh", "-c", script)
}
