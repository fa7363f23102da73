package testlint

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// e2eHelpers are the functions of test/e2e that may sleep and signal: the
// polling helpers (they wait for a condition, with a deadline), the pacing
// helper, and the pid guards.
var e2eHelpers = map[string]bool{
	"pollUntil":  true,
	"pace":       true,
	"signalPID":  true,
	"signalEach": true,
}

// TestE2EFollowsTheRules: every file of test/e2e (whoever wrote it) waits
// for events, signals only through the pid guards, and skips saying why.
func TestE2EFollowsTheRules(t *testing.T) {
	dir := filepath.Join("..", "..", "test", "e2e")
	found, err := CheckDir(dir, e2eHelpers)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		t.Errorf("%s", f)
	}
	// The allowed names must be real functions there, or the allow-list
	// would let anything of that name through unnoticed.
	src := readAll(t, dir)
	for name := range e2eHelpers {
		if !strings.Contains(src, "\nfunc "+name+"(") {
			t.Errorf("allowed helper %s is not defined in %s: drop it from the list", name, dir)
		}
	}
}

// TestFindsPlantedViolations: each planted violation in testdata/planted.go
// (a line ending in "want RULE") is found, and nothing else is.
func TestFindsPlantedViolations(t *testing.T) {
	const path = "testdata/planted.go"
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]string{}
	sc := bufio.NewScanner(strings.NewReader(string(src)))
	for line := 1; sc.Scan(); line++ {
		if _, rule, ok := strings.Cut(sc.Text(), "// want "); ok {
			want[line] = strings.TrimSpace(rule)
		}
	}
	if len(want) < 10 {
		t.Fatalf("only %d planted violations in %s", len(want), path)
	}
	found, err := CheckSource(path, src, map[string]bool{"pollUntil": true})
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]string{}
	for _, f := range found {
		if got[f.Pos.Line] != "" {
			t.Errorf("line %d reported twice: %s", f.Pos.Line, f)
		}
		got[f.Pos.Line] = f.Rule
		if want[f.Pos.Line] != f.Rule {
			t.Errorf("reported, not planted: %s", f)
		}
	}
	for line, rule := range want {
		if got[line] != rule {
			t.Errorf("%s:%d: planted %s violation not found", path, line, rule)
		}
	}
}

func readAll(t *testing.T, dir string) string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, p := range paths {
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(src)
	}
	return b.String()
}

// rootOnlyDirs hold tests that need root (another uid for an attacker or
// a peer) outside test/e2e: they skip through testenv as well.
var rootOnlyDirs = []string{
	filepath.Join("..", "ctl"),
}

// TestRootSkipsGoThroughTestenv: in those directories no test skips by
// itself for want of root (the other rules are test/e2e's own).
func TestRootSkipsGoThroughTestenv(t *testing.T) {
	for _, dir := range rootOnlyDirs {
		found, err := CheckDir(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range found {
			if f.Rule == RuleRoot {
				t.Errorf("%s", f)
			}
		}
	}
}
