package ctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/testenv"
)

// The test binary doubles as a control client run under another uid.
func TestMain(m *testing.M) {
	if os.Getenv("BATON_CTL_TEST_SERVE") != "" {
		fakeServer()
	}
	if os.Getenv("BATON_CTL_TEST_WAIT") != "" { // a generation that serves nothing
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
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
		testenv.Missing(t, "needs root to run a client under another uid")
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

// fakeServer (run as another user) listens on the socket it was given as
// fd 3 (bound by the test in its own directory) and answers every
// connection with a status of its choosing, until its stdin closes.
func fakeServer() {
	if err := syscall.Listen(3, 16); err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	ln, err := net.FileListener(os.NewFile(3, "fake"))
	if err != nil {
		fmt.Println("listener:", err)
		os.Exit(1)
	}
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	fmt.Println("listening")
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		fmt.Fprintln(c, `{"baton":1,"ok":true,"result":{"name":"svc","pid":1,"binary":"/etc/passwd"}}`)
		c.Close()
	}
}

// TestClientRefusesForeignServer: the socket at our endpoint's path is
// served by a process of another user (here: bound in our directory, then
// listened on and served by a child running as uid 65534, which is what
// SO_PEERCRED reports). The client refuses it before sending anything and
// never reads its answer (before: the fake status was believed).
func TestClientRefusesForeignServer(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root to run a server under another uid")
	}
	dir := useTempDir(t)
	if err := ensureDir(dir); err != nil {
		t.Fatal(err)
	}
	path, err := Address("svc")
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	sock := os.NewFile(uintptr(fd), "sock")
	defer sock.Close()

	exe, _ := os.Executable()
	bin := filepath.Join(filepath.Dir(dir), "fake")
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, exe, bin)
	cmd := exec.Command(bin)
	cmd.Env = []string{"BATON_CTL_TEST_SERVE=1"}
	cmd.ExtraFiles = []*os.File{sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "listening\n" {
		t.Fatalf("fake server as uid 65534: %q %v", line, err)
	}

	resp, err := Do(context.Background(), "svc", Request{Op: OpStatus})
	if !errors.Is(err, ErrPeerRefused) || !NotSent(err) || contract.CodeOf(err) != contract.CodeForbidden {
		t.Fatalf("status from a server of uid 65534: response %+v, error %v; want ErrPeerRefused, not sent", resp, err)
	}
	if !strings.Contains(err.Error(), "runs as uid 65534, neither us (uid 0) nor root") || !strings.Contains(err.Error(), path) {
		t.Errorf("the refusal does not say who serves where: %v", err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
