package sockstat

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// pairs dials n connections to ln and accepts them.
func pairs(tb testing.TB, ln net.Listener, n int) (server, client []net.Conn) {
	tb.Helper()
	for range n {
		c, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			c.Close()
			tb.Fatal(err)
		}
		client = append(client, c)
		server = append(server, s)
	}
	tb.Cleanup(func() {
		for i := range server {
			server[i].Close()
			client[i].Close()
		}
	})
	return server, client
}

func port(a net.Addr) int { return a.(*net.TCPAddr).Port }

func count(t *testing.T, pid int, ports []int, paths []string) int {
	t.Helper()
	n, err := Conns(pid, ports, paths)
	if err != nil {
		t.Fatalf("Conns(%d, %v, %q): %v", pid, ports, paths, err)
	}
	return n
}

// waitConns polls until the count is want: a close reaches the peer's
// socket asynchronously.
func waitConns(t *testing.T, pid int, ports []int, paths []string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := count(t, pid, ports, paths)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Conns(%d, %v, %q) = %d, want %d", pid, ports, paths, n, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pid, ports := os.Getpid(), []int{port(ln.Addr())}

	if n := count(t, pid, ports, nil); n != 0 {
		t.Fatalf("listener alone: %d connections, want 0", n)
	}
	const N = 6
	server, client := pairs(t, ln, N)
	if n := count(t, pid, ports, nil); n != N {
		t.Fatalf("%d accepted: counted %d", N, n)
	}

	// This process also holds the client ends, each on its own ephemeral
	// port: they are visible, but not on the listening port.
	var clientPorts []int
	for _, c := range client {
		clientPorts = append(clientPorts, port(c.LocalAddr()))
	}
	if n := count(t, pid, clientPorts, nil); n != N {
		t.Fatalf("client ends: counted %d, want %d", n, N)
	}
	if n := count(t, pid, append(clientPorts, ports...), nil); n != 2*N {
		t.Fatalf("both ends: counted %d, want %d", n, 2*N)
	}

	// Closed server ends linger in FIN_WAIT2 or TIME_WAIT, orphaned
	// (inode 0): no longer counted.
	server[0].Close()
	server[1].Close()
	waitConns(t, pid, ports, nil, N-2)

	// A connection the peer closed stays in CLOSE_WAIT, held and counted,
	// until this side closes it too.
	client[2].Close()
	if _, err := server[2].Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after peer close: %v, want EOF", err)
	}
	if n := count(t, pid, ports, nil); n != N-2 {
		t.Fatalf("with one in CLOSE_WAIT: counted %d, want %d", n, N-2)
	}
	server[2].Close()
	waitConns(t, pid, ports, nil, N-3)

	// A port with no connections, and no ports at all.
	other, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if n := count(t, pid, []int{port(other.Addr())}, nil); n != 0 {
		t.Fatalf("idle port: counted %d", n)
	}
	if n := count(t, pid, nil, nil); n != 0 {
		t.Fatalf("no ports: counted %d", n)
	}
}

func TestTCP6(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	pairs(t, ln, 3)
	if n := count(t, os.Getpid(), []int{port(ln.Addr())}, nil); n != 3 {
		t.Fatalf("counted %d, want 3", n)
	}
}

func TestUnix(t *testing.T) {
	// A space in the path: /proc/net/unix prints it unquoted.
	path := filepath.Join(t.TempDir(), "a b.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pid, paths := os.Getpid(), []string{path}
	if n := count(t, pid, nil, paths); n != 0 {
		t.Fatalf("listener alone: counted %d", n)
	}
	server, _ := pairs(t, ln, 4)
	// Accepted sockets carry the listener's path; the client ends are
	// unbound and do not.
	if n := count(t, pid, nil, paths); n != 4 {
		t.Fatalf("counted %d, want 4", n)
	}
	server[0].Close()
	waitConns(t, pid, nil, paths, 3)
	if n := count(t, pid, nil, []string{path + "x"}); n != 0 {
		t.Fatalf("other path: counted %d", n)
	}

	// TCP and unix together.
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tln.Close()
	pairs(t, tln, 2)
	if n := count(t, pid, []int{port(tln.Addr())}, paths); n != 5 {
		t.Fatalf("tcp+unix: counted %d, want 5", n)
	}
}

func TestAbstractUnix(t *testing.T) {
	name := fmt.Sprintf("@sockstat-test-%d", os.Getpid())
	ln, err := net.Listen("unix", name)
	if err != nil {
		t.Skipf("abstract sockets: %v", err)
	}
	defer ln.Close()
	pairs(t, ln, 2)
	if n := count(t, os.Getpid(), nil, []string{name}); n != 2 {
		t.Fatalf("counted %d, want 2", n)
	}
}

// TestOtherProcess counts the connections of a child that accepts them,
// while this process holds only the client ends.
func TestOtherProcess(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperListener$")
	cmd.Env = append(os.Environ(), "SOCKSTAT_HELPER=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	addr := line[:len(line)-1]
	_, ps, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(ps)
	ports := []int{p}

	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	waitConns(t, cmd.Process.Pid, ports, nil, 3)
	if n := count(t, os.Getpid(), ports, nil); n != 0 {
		t.Fatalf("dialling process: counted %d, want 0", n)
	}
}

func TestHelperListener(t *testing.T) {
	if os.Getenv("SOCKSTAT_HELPER") != "1" {
		t.Skip("helper process for TestOtherProcess")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(ln.Addr())
	go func() {
		var held []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	io.Copy(io.Discard, os.Stdin) // until the parent is done
}

func TestNoProcess(t *testing.T) {
	// Beyond any pid_max (at most 2^22).
	if _, err := Conns(1<<30, []int{80}, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing pid: %v, want ErrNotExist", err)
	}
	for _, pid := range []int{0, -1} {
		if _, err := Conns(pid, []int{80}, nil); err == nil {
			t.Fatalf("pid %d: no error", pid)
		}
	}
	// A process that has exited and been reaped.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := Conns(cmd.Process.Pid, []int{80}, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("exited pid: %v, want ErrNotExist", err)
	}
}

func TestPermission(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads every fd table")
	}
	fi, err := os.Stat("/proc/1")
	if err != nil {
		t.Skip(err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) == os.Geteuid() {
		t.Skip("pid 1 runs as this user")
	}
	if _, err := Conns(1, []int{80}, nil); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("pid 1: %v, want ErrPermission", err)
	}
}

func TestParse(t *testing.T) {
	inodes := map[uint64]struct{}{12345: {}, 777: {}}
	tcp := "   3: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 20 4 30 10 -1"
	if !tcpLine([]byte(tcp), inodes, []int{8080}) {
		t.Fatal("ESTABLISHED on 8080 not matched")
	}
	if tcpLine([]byte(tcp), inodes, []int{8080}) {
		t.Fatal("the same inode matched twice")
	}
	for _, line := range []string{
		"   3: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1",  // LISTEN
		"   3: 0100007F:1F90 0100007F:D2F0 06 00000000:00000000 03:00000000 00000000     0        0 0 3",    // TIME_WAIT
		"   3: 0100007F:1F91 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 777 1",  // other port
		"   3: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 9999 1", // not ours
		"   3: 0100007F:1F90",
		"",
	} {
		if tcpLine([]byte(line), inodes, []int{8080}) {
			t.Errorf("matched %q", line)
		}
	}
	unix := "0000000000000000: 00000003 00000000 00000000 0001 03   777 /run/my app.sock"
	if unixLine([]byte(unix), inodes, []string{"/run/my app"}) || !unixLine([]byte(unix), inodes, []string{"/run/my app.sock"}) {
		t.Fatal("path with a space")
	}
	for _, line := range []string{
		"0000000000000000: 00000002 00000000 00010000 0001 01 12345 /run/app.sock", // listener
		"0000000000000000: 00000002 00000000 00000000 0002 03 12345 /run/app.sock", // datagram
		"0000000000000000: 00000003 00000000 00000000 0001 03 12345",               // unbound
	} {
		if unixLine([]byte(line), map[uint64]struct{}{12345: {}}, []string{"/run/app.sock"}) {
			t.Errorf("matched %q", line)
		}
	}
}

// BenchmarkConns measures a call for a process with about 1000 socket fds.
func BenchmarkConns(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	pairs(b, ln, 500)
	pid, ports := os.Getpid(), []int{port(ln.Addr())}
	for b.Loop() {
		n, err := Conns(pid, ports, nil)
		if err != nil {
			b.Fatal(err)
		}
		if n != 500 {
			b.Fatalf("counted %d, want 500", n)
		}
	}
}
