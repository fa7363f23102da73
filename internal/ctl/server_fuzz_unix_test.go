//go:build unix

package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzServeConn: whatever a (permitted) peer sends on the control socket,
// the server answers with one well-formed response line, a refusal for a
// malformed request, and never panics. The handler sees only requests of
// this protocol version.
func FuzzServeConn(f *testing.F) {
	addSeeds(f, controlSeeds())
	d, err := os.MkdirTemp("", "bfz")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(d) })
	path := filepath.Join(d, "c.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		f.Fatal(err)
	}
	srv := Serve(ln, func(ctx context.Context, req Request) Response {
		if req.Version != Version {
			return Response{Code: "test_failure", Error: "handler called with another version"}
		}
		return OKResponse(req)
	}, nil)
	f.Cleanup(func() { srv.Abort(); srv.Wait() })
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		uc := c.(*net.UnixConn)
		_ = uc.SetDeadline(time.Now().Add(20 * time.Second))
		// Write and read at once: the server may answer (and close) before
		// it has read everything.
		werr := make(chan error, 1)
		go func() {
			_, err := uc.Write(b)
			_ = uc.CloseWrite()
			werr <- err
		}()
		// One line: the server may close with part of the input unread, and
		// the reader then sees ECONNRESET after the answer instead of EOF
		// (ctl.Do reads that one line too).
		br := bufio.NewReader(uc)
		answer, err := br.ReadBytes('\n')
		<-werr
		if err != nil {
			t.Fatalf("reading the answer: %v (got %q)", err, answer)
		}
		if rest, _ := io.ReadAll(br); len(rest) > 0 {
			t.Fatalf("more than one answer: %q then %q", answer, rest)
		}
		var resp Response
		if err := json.Unmarshal(answer, &resp); err != nil {
			t.Fatalf("answer %q is not a response: %v", answer, err)
		}
		if resp.Version != Version {
			t.Fatalf("answer without the protocol version: %q", answer)
		}
		if resp.Code == "test_failure" {
			t.Fatalf("%s", resp.Error)
		}
		if !resp.OK && resp.Code != CodeBadRequest && resp.Code != CodeControlProtocol {
			t.Fatalf("unexpected answer %q", answer)
		}
	})
}
