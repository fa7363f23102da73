package loadgen

import (
	"context"
	"github.com/baton-go/baton/internal/wine"
	"net"
	"strings"
	"testing"
	"time"
)

// udpServer answers each datagram with reply(payload); "" means no answer.
func udpServer(t *testing.T, reply func(payload string) []string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			for _, m := range reply(string(buf[:n])) {
				pc.WriteTo([]byte(m), from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func TestUDPAllOK(t *testing.T) {
	skipUDPUnderWine(t)
	addr := udpServer(t, func(p string) []string { return []string{"pid=777 version=v1 " + p} })
	u, err := StartUDP(context.Background(), UDPConfig{Addr: addr, Interval: time.Millisecond, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "20 probes", func() bool { return u.Snapshot().OK >= 20 })
	r := u.Stop()
	t.Log(r.String())
	if r.Failed != 0 || r.PIDs[777] != r.OK || len(r.PIDs) != 1 {
		t.Fatalf("report: %s", r)
	}
}

func TestUDPNothingListening(t *testing.T) {
	skipUDPUnderWine(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	u, err := StartUDP(context.Background(), UDPConfig{Addr: addr, Interval: time.Millisecond, Timeout: 200 * time.Millisecond, MaxProbes: 5})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, u.Done())
	r := u.Stop()
	if r.OK != 0 || r.Failed != 5 || len(r.Failures) != 5 {
		t.Fatalf("report: %s", r)
	}
}

func TestUDPLateAndGarbledAnswers(t *testing.T) {
	skipUDPUnderWine(t)
	// probe-1 is answered only after probe-2 arrives, i.e. after it timed
	// out; probe-2 also gets noise first; probe-3 gets a garbled answer.
	addr := udpServer(t, func(p string) []string {
		switch p {
		case "probe-1":
			return nil
		case "probe-2":
			return []string{"pid=777 version=v1 probe-1", "garbage", "pid=777 version=v1 probe-2"}
		case "probe-3":
			return []string{"pid=x version=v1 probe-3"}
		}
		return []string{"pid=777 version=v1 " + p}
	})
	u, err := StartUDP(context.Background(), UDPConfig{Addr: addr, Interval: time.Millisecond, Timeout: 1500 * time.Millisecond, MaxProbes: 5})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, u.Done())
	r := u.Stop()
	t.Log(r.String())
	if r.OK != 3 || r.Failed != 2 || r.PIDs[777] != 3 || len(r.Failures) != 2 {
		t.Fatalf("report: %s", r)
	}
	if f := r.Failures[0]; f.Phase != "read" || !strings.Contains(f.Err, "probe-1") || f.Kind != UDP {
		t.Errorf("failure 0: %+v", f)
	}
	if f := r.Failures[1]; f.Phase != "answer" || !strings.Contains(f.Err, "probe-3") {
		t.Errorf("failure 1: %+v", f)
	}
}

// skipUDPUnderWine: Wine 8.0 cannot open UDP sockets for Go >= 1.26
// (WSAEOPNOTSUPP); real Windows can.
func skipUDPUnderWine(t *testing.T) {
	if v, ok := wine.Version(); ok {
		t.Skipf("Wine %s cannot open UDP sockets (WSAEOPNOTSUPP); this test needs real Windows", v)
	}
}
