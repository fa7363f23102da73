package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRotatingFileKeepsNFiles(t *testing.T) {
	// Not t.TempDir: under Wine its clean-up fails (os.RemoveAll uses an NT
	// call Wine lacks).
	dir, err := os.MkdirTemp("", "blogs")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "app.log")
	r, err := openRotating(path, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	w := newLineWriter(r)
	for i := 0; i < 30; i++ {
		w.WriteLine(fmt.Sprintf("[gen 1 pid 42] line %02d", i)) // 24 bytes each
	}
	r.Close()
	for _, p := range []string{path, path + ".1", path + ".2"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if fi.Size() > 100 {
			t.Errorf("%s is %d bytes, over the 100-byte limit", p, fi.Size())
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Error("more rotated files than --log-keep")
	}
	b, _ := os.ReadFile(path)
	if !strings.HasSuffix(string(b), "line 29\n") {
		t.Errorf("the current file does not end with the last line: %q", b)
	}
	// The ring serves `baton logs`: the last lines, then what follows.
	lines, next := w.Since(-3)
	if len(lines) != 3 || lines[2].Text != "[gen 1 pid 42] line 29" || next != 30 {
		t.Fatalf("Since(-3) = %v, %d", lines, next)
	}
	w.WriteLine("[gen 2 pid 43] hello")
	lines, _ = w.Since(next)
	if len(lines) != 1 || lines[0].Text != "[gen 2 pid 43] hello" {
		t.Fatalf("Since(next) = %v", lines)
	}
}

func TestLineWriterReopen(t *testing.T) {
	dir, err := os.MkdirTemp("", "breopen") // not t.TempDir: see above
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "app.log")
	rf, err := openRotating(path, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	lw := newLineWriter(rf)
	defer func() { rf.Close() }()
	lw.WriteLine("before")
	if err := os.Rename(path, path+".moved"); err != nil {
		// Go opens files without FILE_SHARE_DELETE on Windows: a log
		// rotated by another tool is copied and truncated there instead.
		t.Skipf("an open file cannot be renamed here: %v", err)
	}
	lw.WriteLine("still to the moved file")
	if err := lw.reopen(); err != nil {
		t.Fatal(err)
	}
	lw.WriteLine("after")
	moved, _ := os.ReadFile(path + ".moved")
	now, _ := os.ReadFile(path)
	if string(moved) != "before\nstill to the moved file\n" || string(now) != "after\n" {
		t.Fatalf("moved file %q, new file %q", moved, now)
	}
}
