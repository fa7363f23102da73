// Package testenv is how tests get what they need from the machine (a
// program such as chromium or ansible-playbook) and what they do when it
// cannot be had: skip with the reason on a developer's machine, fail in CI
// (CI=true), where a missing dependency must never pass as green.
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true), where nothing may be
// skipped for want of a dependency.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing skips t with reason, or fails it under CI=true.
func Missing(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI: %s", reason)
	}
	t.Skip(reason)
}

// Command returns the path of the program name, installing the Debian
// package pkg when it is missing (scripts/need.sh: as root, with apt-get,
// one install at a time across test processes). When the program cannot
// be had, t is skipped saying why, or fails under CI=true.
func Command(t testing.TB, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	root, err := ModuleRoot()
	if err != nil {
		Missing(t, fmt.Sprintf("%s is not installed and the installer script cannot be found: %v", name, err))
		return ""
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "need.sh"), name, pkg)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		Missing(t, fmt.Sprintf("%s (Debian package %s) is needed: %v: %s", name, pkg, err, strings.TrimSpace(stderr.String())))
		return ""
	}
	return strings.TrimSpace(stdout.String())
}

// ModuleRoot is the directory of baton's go.mod, found upwards from the
// working directory (a nested module's tests find the main module too).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/baton-go/baton\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module github.com/baton-go/baton above the working directory")
		}
		dir = parent
	}
}

// TempDir is t.TempDir for tests that also run as Windows binaries under
// Wine: there Go's os.RemoveAll fails ("unlinkat: Invalid function", an NT
// call Wine lacks) and t.TempDir's clean-up would fail the test. The
// directory is removed file by file, the deepest first, best effort.
func TempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "baton-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var paths []string
		_ = filepath.WalkDir(d, func(p string, _ fs.DirEntry, _ error) error {
			paths = append(paths, p)
			return nil
		})
		for i := len(paths) - 1; i >= 0; i-- {
			os.Remove(paths[i])
		}
	})
	return d
}
