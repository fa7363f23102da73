//go:build unix

package supervisor

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestSweepGenFilesOnlyThatName(t *testing.T) {
	dir := t.TempDir()
	files := []string{"web.gen1.bin", "web.gen12.notify", "web.gen3.link", "web.sock",
		"web.genX.gen1.bin", "web.gen.bin", "webx.gen1.bin", "other.gen1.bin", "web.gen1.bin.keep"}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sweepGenFiles(dir, "web")
	ents, _ := os.ReadDir(dir)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	want := []string{"other.gen1.bin", "web.gen.bin", "web.gen1.bin.keep", "web.genX.gen1.bin", "web.sock", "webx.gen1.bin"}
	if !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
}
