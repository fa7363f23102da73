// Package fuzzseed gives baton's fuzz targets their seeds in one way: each
// seed is added with f.Add and also checked in under the package's
// testdata/fuzz/<target>/, so that plain `go test` (and `make test`) runs
// them. After changing a seed list, rewrite the files with
//
//	BATON_WRITE_CORPUS=1 go test -run '^FuzzName$' ./the/package
//
// It is imported by tests only.
package fuzzseed

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Add adds every seed (one value per argument of the fuzz function) to f
// and, with BATON_WRITE_CORPUS set, writes them as seed-NN files.
func Add(f *testing.F, seeds ...[]any) {
	f.Helper()
	for _, s := range seeds {
		f.Add(s...)
	}
	if os.Getenv("BATON_WRITE_CORPUS") == "" {
		return
	}
	dir := filepath.Join("testdata", "fuzz", f.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.Fatal(err)
	}
	for i, s := range seeds {
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, v := range s {
			line, err := encode(v)
			if err != nil {
				f.Fatal(err)
			}
			b.WriteString(line + "\n")
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(b.String()), 0o644); err != nil {
			f.Fatal(err)
		}
	}
}

// Bytes makes seeds of single []byte arguments.
func Bytes(seeds ...[]byte) [][]any {
	out := make([][]any, len(seeds))
	for i, s := range seeds {
		out[i] = []any{s}
	}
	return out
}

// encode writes v as the corpus file format of the Go fuzzer.
func encode(v any) (string, error) {
	switch v := v.(type) {
	case []byte:
		return fmt.Sprintf("[]byte(%q)", v), nil
	case string:
		return fmt.Sprintf("string(%q)", v), nil
	case uint8:
		return fmt.Sprintf("uint8(%d)", v), nil
	case int:
		return fmt.Sprintf("int(%d)", v), nil
	case int64:
		return fmt.Sprintf("int64(%d)", v), nil
	case bool:
		return fmt.Sprintf("bool(%t)", v), nil
	}
	return "", fmt.Errorf("fuzzseed: no corpus encoding for %T", v)
}
