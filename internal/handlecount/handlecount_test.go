package handlecount

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/baton-go/baton/internal/testenv"
)

// Opening files raises the count by one each and closing them takes it
// back, for Count and for Of the same process (under Wine, the probing
// path: its GetProcessHandleCount answers 0). The Go runtime may open a
// few handles of its own meanwhile (a thread's, on Windows): slack.
func TestCountFollowsOpenFiles(t *testing.T) {
	const files, slack = 100, 8
	path := filepath.Join(testenv.TempDir(t), "f")
	if err := os.WriteFile(path, nil, 0o600); err != nil { // also opens what the runtime opens once
		t.Fatal(err)
	}
	base := count(t)
	if base <= 0 {
		t.Fatalf("count %d", base)
	}
	var open []*os.File
	for range files {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, f)
	}
	with := count(t)
	if d := with - base; d < files || d > files+slack {
		t.Errorf("%d files opened: the count went from %d to %d", files, base, with)
	}
	for _, f := range open {
		f.Close()
	}
	if d := with - count(t); d < files-slack || d > files {
		t.Errorf("%d files closed: the count fell by %d", files, d)
	}
}

// count is Count, checked against Of for this process: exactly, once
// two Counts around the Of agree (the Go runtime may open a handle of its
// own in between, a thread's on Windows).
func count(t *testing.T) int {
	t.Helper()
	for range 20 {
		n, err := Count()
		if err != nil {
			t.Fatal(err)
		}
		m, err := Of(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if again, err := Count(); err != nil || again != n {
			continue
		}
		if m != n {
			t.Fatalf("Count %d, Of(self) %d", n, m)
		}
		return n
	}
	t.Fatal("the count did not settle in 20 tries")
	return 0
}
