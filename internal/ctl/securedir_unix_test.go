//go:build unix

package ctl

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-go/baton/internal/testenv"
)

// TestRuntimeDirThroughForeignLink: the attack of issue 14. Another user
// plants a link to our runtime directory in a directory everyone may
// write to (as /tmp); a service and a client given the link's path are
// refused (before: both followed it, and the link's owner could re-point
// it at a directory of theirs holding a fake control socket). Links and
// directories that only we or root control pass.
func TestRuntimeDirThroughForeignLink(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root to give a link and directories to another user (uid 65534)")
	}
	const nobody = 65534
	base, err := os.MkdirTemp("", "bsec")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	mustDo := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustDo(os.Chmod(base, 0o755))
	pub := filepath.Join(base, "pub") // like /tmp
	mustDo(os.Mkdir(pub, 0o777))
	mustDo(os.Chmod(pub, 0o777|os.ModeSticky))
	open := filepath.Join(base, "open") // writable by all, not sticky
	mustDo(os.Mkdir(open, 0o777))
	mustDo(os.Chmod(open, 0o777))
	real := filepath.Join(base, "real")
	mustDo(os.Mkdir(real, 0o700))

	foreignLink := filepath.Join(pub, "rt")
	mustDo(os.Symlink(real, foreignLink))
	mustDo(os.Lchown(foreignLink, nobody, nobody))
	ourLink := filepath.Join(pub, "ours")
	mustDo(os.Symlink(real, ourLink))
	openLink := filepath.Join(open, "rt")
	mustDo(os.Symlink(real, openLink))
	theirDir := filepath.Join(base, "theirs")
	mustDo(os.Mkdir(theirDir, 0o700))
	mustDo(os.Chown(theirDir, nobody, nobody))
	looseDir := filepath.Join(base, "loose")
	mustDo(os.Mkdir(looseDir, 0o700))
	mustDo(os.Chmod(looseDir, 0o770))
	theirParent := filepath.Join(base, "nob")
	mustDo(os.Mkdir(theirParent, 0o755))
	mustDo(os.Mkdir(filepath.Join(theirParent, "run"), 0o700))
	mustDo(os.Chown(theirParent, nobody, nobody))

	for _, tc := range []struct {
		dir, says string
	}{
		{foreignLink, foreignLink + " is a symbolic link owned by uid 65534"},
		{filepath.Join(foreignLink, "sub"), foreignLink + " is a symbolic link owned by uid 65534"},
		{openLink, openLink + " is in " + open + ", which other users may write to"},
		{theirDir, "control directory " + theirDir + " belongs to uid 65534"},
		{looseDir, "control directory " + looseDir + " is writable by other users (mode 0770)"},
		{filepath.Join(theirParent, "run"), filepath.Join(theirParent, "run") + " is in " + theirParent + ", which belongs to uid 65534"},
	} {
		t.Setenv("BATON_RUNTIME_DIR", tc.dir)
		ln, err := Listen("svc")
		if err == nil {
			ln.Close()
		}
		if !errors.Is(err, ErrUnsafeDir) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Listen in %s: %v, want ErrUnsafeDir saying %q", tc.dir, err, tc.says)
		}
		_, err = Do(context.Background(), "svc", Request{Op: OpStatus})
		if !errors.Is(err, ErrUnsafeDir) || !strings.Contains(err.Error(), tc.says) || !NotSent(err) {
			t.Errorf("Do through %s: %v, want ErrUnsafeDir saying %q, not sent", tc.dir, err, tc.says)
		}
	}
	if _, err := os.Stat(filepath.Join(real, "svc.sock")); err == nil {
		t.Fatal("a socket was made through a refused path")
	}

	// Our own link in a sticky directory (as /var/run -> /run): used.
	t.Setenv("BATON_RUNTIME_DIR", ourLink)
	ln, err := Listen("svc")
	if err != nil {
		t.Fatalf("Listen through our own link %s: %v", ourLink, err)
	}
	srv := Serve(ln, func(ctx context.Context, req Request) Response { return OKResponse("ours") }, nil)
	defer srv.Close()
	resp, err := Do(context.Background(), "svc", Request{Op: OpStatus})
	var got string
	if err != nil || resp.Decode(&got) != nil || got != "ours" {
		t.Fatalf("Do through our own link: %+v %v", resp, err)
	}
	if _, err := os.Stat(filepath.Join(real, "svc.sock")); err != nil {
		t.Fatalf("the socket is not in the link's target: %v", err)
	}
}
