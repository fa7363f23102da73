package ctl

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The test binary doubles as a control client run under another uid.
func TestMain(m *testing.M) {
	if path := os.Getenv("BATON_CTL_TEST_DIAL"); path != "" {
		c, err := net.Dial("unix", path)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(0)
		}
		fmt.Fprintln(c, `{"baton":1,"op":"status"}`)
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Print(line)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestOtherUserRefused: even when the socket's permissions are loosened, a
// peer with another uid is refused by its credentials.
func TestOtherUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client under another uid")
	}
	dir := useTempDir(t)
	ln, err := Listen("svc")
	if err != nil {
		t.Fatal(err)
	}
	called := false
	srv := Serve(ln, func(ctx context.Context, req Request) Response { called = true; return OKResponse("secret") }, nil)
	defer srv.Close()
	path, _ := Address("svc")
	// Loosen everything so that only the credential check stands.
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	os.Chmod(path, 0o777)

	exe, _ := os.Executable()
	bin := filepath.Join(filepath.Dir(dir), "client")
	in, _ := os.Open(exe)
	out, _ := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	io.Copy(out, in)
	in.Close()
	out.Close()
	cmd := exec.Command(bin)
	cmd.Env = []string{"BATON_CTL_TEST_DIAL=" + path}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	got, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client as uid 65534: %v\n%s", err, got)
	}
	if !strings.Contains(string(got), "peer uid 65534 is neither the service owner") {
		t.Fatalf("another user's request was not refused by credentials: %s", got)
	}
	srv.Close()
	srv.Wait()
	if called {
		t.Fatal("the handler ran for another user's request")
	}
}
