//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
)

// TestHTTPControl: hello under `baton run --http-control` with a token
// file. Over real HTTP: no token or a wrong one is 401 and changes
// nothing; with it, status answers, an upgrade runs end to end (the new
// generation serves), a rollback too; past --http-control-rate requests a
// minute the answer is 429. Every call is an event with its caller and
// outcome, and the token appears nowhere in the events file.
func TestHTTPControl(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	const token = "e2e-token-0123456789abcdef"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, caddr := freeAddr(t, "tcp"), freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "httpctl", os.Environ(), "--http-control", caddr, "--http-control-token-file", tokenFile,
		"--http-control-rate", "12", "--listen", "tcp://"+addr, "--", bins["hello"], "-addr", addr, "-idle-grace", "200ms")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	call := func(method, path, auth string) (int, contract.Response) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, "http://"+caddr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		var r contract.Response
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("%s %s: not a control response: %v: %s", method, path, err, b)
		}
		return resp.StatusCode, r
	}
	bearer := "Bearer " + token

	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, auth := range []string{"", "Bearer not-the-token"} { // 2 calls
		if code, r := call("POST", "/v1/upgrade", auth); code != http.StatusUnauthorized || r.Code != contract.CodeForbidden {
			t.Fatalf("upgrade with Authorization %q: %d %+v, want 401", auth, code, r)
		}
	}
	if now, err := svc.Status(ctx); err != nil || now.Generation != st.Generation || now.PID != st.PID {
		t.Fatalf("a refused upgrade changed the service: %+v %v", now, err)
	}

	code, r := call("GET", "/v1/status", bearer) // 3
	var hs contract.Status
	if code != http.StatusOK || r.Decode(&hs) != nil || hs.PID != st.PID || hs.Generation != 1 {
		t.Fatalf("status over HTTP: %d %+v", code, r)
	}
	code, r = call("POST", "/v1/upgrade", bearer) // 4
	var up contract.UpgradeResult
	if code != http.StatusOK || r.Decode(&up) != nil || up.Generation != 2 || up.PID == st.PID {
		t.Fatalf("upgrade over HTTP: %d %+v", code, r)
	}
	tracker.Track(up.PID)
	waitFor(t, 10*time.Second, "the new generation answering on the service's port", func() bool {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(b), " pid "+strconv.Itoa(up.PID)+" ")
	})
	code, r = call("POST", "/v1/rollback", bearer) // 5
	var back contract.UpgradeResult
	if code != http.StatusOK || r.Decode(&back) != nil || back.Generation != 3 {
		t.Fatalf("rollback over HTTP: %d %+v", code, r)
	}
	tracker.Track(back.PID)
	if now, err := svc.Status(ctx); err != nil || now.PID != back.PID || now.Generation != 3 {
		t.Fatalf("status after the HTTP rollback: %+v %v, want pid %d generation 3", now, err, back.PID)
	}

	// 12 a minute (a burst of 12, then one every 5 s): 5 used, so the 8th
	// call from here is refused unless tokens came back meanwhile (one per
	// 5 s the calls took on a busy machine): bounded at 40 calls.
	limited := false
	for i := 0; i < 40 && !limited; i++ {
		code, r := call("GET", "/v1/status", bearer)
		switch code {
		case http.StatusOK:
		case http.StatusTooManyRequests:
			limited = r.Code == contract.CodeBusy
		default:
			t.Fatalf("status call %d: %d %+v", i+6, code, r)
		}
	}
	if !limited {
		t.Fatal("45 calls at --http-control-rate 12 a minute: none refused with 429")
	}

	// The events file: every call, with the caller, never the token.
	path := events.Path(ctl.Dir(), "httpctl")
	var calls []events.Record
	waitFor(t, 10*time.Second, "the control requests in the events file", func() bool {
		recs, _, err := events.ReadFile(path)
		if err != nil {
			return false
		}
		calls = calls[:0]
		for _, rec := range recs {
			if rec.Name == events.ControlRequest {
				calls = append(calls, rec)
			}
		}
		return len(calls) >= 6
	})
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), token) {
		t.Fatal("the token is in the events file")
	}
	want := []struct{ op, code string }{{"upgrade", "forbidden"}, {"upgrade", "forbidden"}, {"status", ""}, {"upgrade", ""}, {"rollback", ""}}
	for i, w := range want {
		c := calls[i]
		if c.Operation != w.op || c.ErrorType != w.code || !strings.Contains(c.Message, "from 127.0.0.1:") || c.Service != "httpctl" {
			t.Errorf("event %d: %+v, want %s %q from 127.0.0.1", i+1, c, w.op, w.code)
		}
	}
	if last := calls[len(calls)-1]; !strings.Contains(last.Message, "429") {
		t.Errorf("the refused call is not recorded: %+v", last)
	}
}

// TestHTTPControlRefusedConfig: baton run refuses to start (exit 2,
// saying why, nothing started) without a token file, with an empty one,
// one others may read, or a non-loopback address without
// --http-control-allow-remote.
func TestHTTPControlRefusedConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	empty := filepath.Join(dir, "empty")
	shared := filepath.Join(dir, "shared")
	for p, c := range map[string]string{good: "tok\n", empty: "\n", shared: "tok\n"} {
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(shared, 0o644); err != nil {
		t.Fatal(err)
	}
	caddr := freeAddr(t, "tcp")
	_, port, _ := strings.Cut(caddr, ":")
	for _, c := range []struct {
		what string
		args []string
		says string
	}{
		{"no token file", []string{"--http-control", caddr}, "needs --http-control-token-file"},
		{"missing token file", []string{"--http-control", caddr, "--http-control-token-file", filepath.Join(dir, "nope")}, "no such file"},
		{"empty token file", []string{"--http-control", caddr, "--http-control-token-file", empty}, "is empty"},
		{"token file others may read", []string{"--http-control", caddr, "--http-control-token-file", shared}, "chmod 600"},
		{"every interface", []string{"--http-control", "0.0.0.0:" + port, "--http-control-token-file", good}, "--http-control-allow-remote"},
	} {
		args := append([]string{"run", "--name", "httpctlbad"}, c.args...)
		args = append(args, "--listen", "tcp://"+freeAddr(t, "tcp"), "--", bins["hello"])
		code, out := runCLI(args...)
		if code != contract.ExitUsage || !strings.Contains(out, c.says) {
			t.Errorf("%s: exit %d, want %d saying %q: %s", c.what, code, contract.ExitUsage, c.says, out)
		}
	}
}
