package handoff

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/winpipe"
)

// winTempDir: not t.TempDir, whose os.RemoveAll fails under Wine; the
// directory is removed on a best-effort basis.
func winTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "hlink")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			os.RemoveAll(filepath.Join(d, e.Name()))
		}
		os.Remove(d)
	})
	return d
}

// helperLink is the generation of TestLinkRoundTrip: it takes what the
// supervisor gives (state, and a file it writes into), then serves the
// link: the first handover gives a state and a file of its own, the
// second fails, a drain is reported on stdout; it exits when the link
// closes.
func helperLink() error {
	l, handed, err := DialLink(winBound, 1<<20)
	if err != nil || l == nil {
		return fmt.Errorf("DialLink: %v", err)
	}
	if _, ok := os.LookupEnv(EnvLink); ok {
		return errors.New("EnvLink still set")
	}
	if l.PeerPID() != os.Getppid() {
		return fmt.Errorf("the link's peer is pid %d, the parent %d", l.PeerPID(), os.Getppid())
	}
	if handed.Msg.Generation != 2 || string(handed.State) != "counter=41" || len(handed.Items) != 1 || handed.Items[0].File == nil {
		return fmt.Errorf("handed %+v state %q items %d", handed.Msg, handed.State, len(handed.Items))
	}
	if _, err := handed.Items[0].File.WriteString("from gen 2\n"); err != nil {
		return fmt.Errorf("writing the handed file: %v", err)
	}
	handed.Items[0].File.Close()
	mine, err := os.Create(os.Getenv("BATON_TEST_GEN_FILE"))
	if err != nil {
		return err
	}
	defer mine.Close()
	mine.WriteString("written by gen 2\n")
	asked := 0
	err = l.Serve(func() (*Handed, error) {
		asked++
		if asked > 1 {
			return nil, errors.New("no state this time")
		}
		return &Handed{Msg: Handoff{Generation: 3}, State: []byte("counter=42"),
			Items: []Item{{Desc: FileDesc{Kind: KindFile, Name: "mine"}, File: mine}}}, nil
	}, func() { fmt.Println("drained") }, nil)
	fmt.Println("link closed:", err)
	return nil
}

// The link carries the state and a named file both ways between two
// processes over the named pipe, each end knowing the other's pid from the
// kernel; a failed state leaves the link usable; drain reaches the
// generation.
func TestLinkRoundTrip(t *testing.T) {
	dir := winTempDir(t)
	f, err := os.Create(filepath.Join(dir, "events"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ln, path, err := ListenLink(fmt.Sprintf("test-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if !strings.HasPrefix(path, `\\.\pipe\baton-link-test-`) {
		t.Fatalf("link path %q", path)
	}

	exe, args, env := helperCmd("link")
	cmd := exec.Command(exe, args...)
	cmd.Env = append(env, EnvLink+"="+path, "BATON_TEST_GEN_FILE="+filepath.Join(dir, "gen2"))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	said := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			said <- sc.Text()
		}
		close(said)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), winBound)
	defer cancel()
	l, hello, err := AcceptLink(ctx, ln)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if hello.PID != cmd.Process.Pid || l.PeerPID() != cmd.Process.Pid {
		t.Fatalf("hello from pid %d, peer %d; the generation is %d", hello.PID, l.PeerPID(), cmd.Process.Pid)
	}
	if err := l.Give(&Handed{Msg: Handoff{Generation: 2}, State: []byte("counter=41"),
		Items: []Item{{Desc: FileDesc{Kind: KindFile, Name: "events"}, File: f}}}); err != nil {
		t.Fatal(err)
	}

	h, err := l.Take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Msg.Generation != 3 || string(h.State) != "counter=42" || len(h.Items) != 1 || h.Items[0].Desc.Name != "mine" || h.Items[0].File == nil {
		t.Fatalf("taken: %+v state %q items %+v", h.Msg, h.State, h.Items)
	}
	// The handle is the generation's open file: read it from the start.
	if _, err := h.Items[0].File.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(h.Items[0].File); string(b) != "written by gen 2\n" {
		t.Fatalf("the taken file holds %q", b)
	}
	// And the generation wrote into ours (through its own handle).
	if b, _ := os.ReadFile(f.Name()); string(b) != "from gen 2\n" {
		t.Fatalf("the given file holds %q", b)
	}

	if _, err := l.Take(ctx); !errors.Is(err, ErrNoState) || l.Broken() {
		t.Fatalf("second Take: %v (broken %v), want ErrNoState on a usable link", err, l.Broken())
	}
	if err := l.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-said:
		if s != "drained" {
			t.Fatalf("the generation said %q, want drained", s)
		}
	case <-time.After(winBound):
		t.Fatal("the generation did not drain")
	}
	l.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the generation: %v", err)
		}
	case <-time.After(winBound):
		t.Fatal("the generation did not exit when its link closed")
	}
}

// A client whose hello names another pid than the kernel's is refused.
func TestLinkRefusesWrongPID(t *testing.T) {
	ln, path, err := ListenLink(fmt.Sprintf("liar-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), winBound)
	defer cancel()
	go func() {
		c, err := winpipe.Dial(ctx, path)
		if err != nil {
			return
		}
		defer c.Close()
		writeJSON(c, LinkHello{Version: LinkVersion, PID: os.Getpid() + 4})
		io.Copy(io.Discard, c)
	}()
	_, _, err = AcceptLink(ctx, ln)
	if !errors.Is(err, ErrLink) || !strings.Contains(err.Error(), "says it is pid") {
		t.Fatalf("err = %v, want a refusal for the pid", err)
	}
}

// AcceptLink gives up with its context; a generation that connects later
// is taken by the next AcceptLink.
func TestLinkAcceptCanceled(t *testing.T) {
	ln, path, err := ListenLink(fmt.Sprintf("late-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, _, err = AcceptLink(ctx, ln)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's", err)
	}
	t.Setenv(EnvLink, path)
	type dialed struct {
		l   *LinkConn
		h   *Handed
		err error
	}
	dc := make(chan dialed, 1)
	go func() {
		l, h, err := DialLink(winBound, 0)
		dc <- dialed{l, h, err}
	}()
	ctx, cancel = context.WithTimeout(context.Background(), winBound)
	defer cancel()
	l, hello, err := AcceptLink(ctx, ln)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if hello.PID != os.Getpid() {
		t.Fatalf("hello from %d", hello.PID)
	}
	if err := l.Give(nil); err != nil {
		t.Fatal(err)
	}
	d := <-dc
	if d.err != nil {
		t.Fatal(d.err)
	}
	defer d.l.Close()
	if d.l.PeerPID() != os.Getpid() || d.h.Msg.Generation != 0 || len(d.h.Items) != 0 {
		t.Fatalf("dialed: peer %d, handed %+v", d.l.PeerPID(), d.h)
	}
}
