//go:build unix

package ctl

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func useTempDir(t *testing.T) string {
	// t.TempDir can exceed the sun_path limit; keep the path short.
	d, err := os.MkdirTemp("", "bctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	dir := filepath.Join(d, "run")
	t.Setenv("BATON_RUNTIME_DIR", dir)
	return dir
}

func TestRoundTripAndPermissions(t *testing.T) {
	dir := useTempDir(t)
	ln, err := Listen("svc")
	if err != nil {
		t.Fatal(err)
	}
	srv := Serve(ln, func(ctx context.Context, req Request) Response {
		return OKResponse(map[string]string{"op": req.Op})
	}, nil)
	defer srv.Close()

	fi, err := os.Stat(filepath.Join(dir, "svc.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode = %v, want 0600", perm)
	}
	di, _ := os.Stat(dir)
	if perm := di.Mode().Perm(); perm != 0o700 {
		t.Errorf("dir mode = %v, want 0700", perm)
	}

	resp, err := Do(context.Background(), "svc", Request{Op: OpStatus})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if !resp.OK || resp.Decode(&got) != nil || got["op"] != OpStatus {
		t.Fatalf("unexpected response %+v", resp)
	}
}

func TestNameInUseAndStaleSocket(t *testing.T) {
	useTempDir(t)
	ln, err := Listen("svc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("svc"); !errors.Is(err, ErrNameInUse) {
		t.Fatalf("second Listen: %v, want ErrNameInUse", err)
	}
	ln.Close() // the file stays (unlink on close is off): now it is stale
	ln2, err := Listen("svc")
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()
	if err := Remove("svc"); err != nil {
		t.Fatal(err)
	}
	if _, err := Do(context.Background(), "svc", Request{Op: OpStatus}); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("Do without a service: %v, want ErrNoEndpoint", err)
	}
}

func TestBadNamesAndMalformedRequests(t *testing.T) {
	useTempDir(t)
	for _, n := range []string{"", "../x", "a/b", ".hidden", strings.Repeat("a", 65)} {
		if err := CheckName(n); !errors.Is(err, ErrBadName) {
			t.Errorf("CheckName(%q) = %v", n, err)
		}
	}
	ln, err := Listen("svc")
	if err != nil {
		t.Fatal(err)
	}
	called := false
	srv := Serve(ln, func(ctx context.Context, req Request) Response { called = true; return OKResponse(1) }, nil)
	defer srv.Close()
	path, _ := Address("svc")
	for _, msg := range []string{"not json\n", `{"baton":99,"op":"status"}` + "\n"} {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(msg))
		var resp Response
		err = readLine(bufio.NewReader(c), &resp)
		c.Close()
		if err != nil || resp.OK || resp.Error == "" {
			t.Errorf("request %q: resp %+v err %v, want a clear refusal", msg, resp, err)
		}
	}
	srv.Close()
	srv.Wait()
	if called {
		t.Error("handler ran for a malformed request")
	}
}
