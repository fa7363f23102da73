// scripts/need.sh is bash and apt-get: the tests run where it does.

//go:build unix

package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "scripts", "need.sh")); err != nil {
		t.Errorf("module root %s has no scripts/need.sh: %v", root, err)
	}
}

func TestCommandOnPath(t *testing.T) {
	if p := Command(t, "go", "golang-go"); filepath.Base(p) != "go" {
		t.Errorf("Command(go) = %q", p)
	}
}
