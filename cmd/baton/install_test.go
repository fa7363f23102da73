package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-go/baton/internal/release"
)

// stagingFixture: an "installed" binary and a candidate, both real Go
// executables (copies of this test binary; the candidate differs by a
// trailing byte, which loaders ignore).
func stagingFixture(t *testing.T) (dir, installed, candidate string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	dir, err = os.MkdirTemp("", "binst")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	installed = filepath.Join(dir, "app")
	candidate = filepath.Join(dir, "app-v2")
	if err := os.WriteFile(installed, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(candidate, append(b, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, installed, candidate
}

func TestInstallReleasesCheck(t *testing.T) {
	dir, installed, candidate := stagingFixture(t)
	v1, _ := release.FileSHA256(installed)
	v2, _ := release.FileSHA256(candidate)

	code, out, errOut := runCLI(t, "check", "--path", installed, "--binary", candidate, "--sha256", v2)
	if code != 0 || !strings.Contains(out, "all checks passed") {
		t.Fatalf("check: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = runCLI(t, "install", "--path", installed, "--sha256", v1, candidate)
	if code != exitFailed || !strings.Contains(errOut, "checksum mismatch") || !strings.Contains(errOut, "nothing changed") {
		t.Fatalf("install with a wrong sha256: exit %d\n%s", code, errOut)
	}
	if s, _ := release.FileSHA256(installed); s != v1 {
		t.Fatal("a refused install changed the installed binary")
	}
	code, out, errOut = runCLI(t, "install", "--path", installed, "--json", candidate)
	var rep installReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !rep.OK || rep.Release == nil || rep.Previous == nil {
		t.Fatalf("install: exit %d\n%s%s", code, out, errOut)
	}
	if s, _ := release.FileSHA256(installed); s != v2 {
		t.Fatal("install did not switch the installed binary")
	}
	if rep.Previous.SHA256 != v1 || rep.Release.SHA256 != v2 {
		t.Fatalf("install report %+v", rep)
	}
	code, out, _ = runCLI(t, "releases", "--path", installed, "--json")
	var rel releasesReport
	if code != 0 || json.Unmarshal([]byte(out), &rel) != nil || len(rel.Releases) != 2 {
		t.Fatalf("releases: exit %d\n%s", code, out)
	}
	for _, r := range rel.Releases {
		if r.Installed != (r.SHA256 == v2) || r.Previous != (r.SHA256 == v1) {
			t.Errorf("releases marks %+v", r)
		}
	}
	code, out, _ = runCLI(t, "releases", "--path", installed)
	if code != 0 || !strings.Contains(out, "installed") || !strings.Contains(out, "previous") {
		t.Fatalf("releases text: %s", out)
	}
	// Not an executable at all.
	text := filepath.Join(dir, "notes.txt")
	os.WriteFile(text, []byte("hello\n"), 0o755)
	code, out, _ = runCLI(t, "check", "--path", installed, "--binary", text, "--json")
	var cr checkReport
	if code != exitFailed || json.Unmarshal([]byte(out), &cr) != nil || cr.OK || cr.Code != "not_executable" {
		t.Fatalf("check of a text file: exit %d\n%s", code, out)
	}
}

func TestInstallUsageAndBusy(t *testing.T) {
	_, installed, candidate := stagingFixture(t)
	if code, _, errOut := runCLI(t, "install", candidate); code != exitUsage || !strings.Contains(errOut, "--name or --path") {
		t.Fatalf("install without --name or --path: exit %d %s", code, errOut)
	}
	if code, _, errOut := runCLI(t, "install", "--name", "nosuchservice", candidate); code != exitUnreachable || !strings.Contains(errOut, "--path") {
		t.Fatalf("install for a service that is not running: exit %d %s", code, errOut)
	}
	// Another baton holds the releases lock.
	st, err := release.Open(installed, release.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer st.Unlock()
	code, _, errOut := runCLI(t, "install", "--path", installed, "--timeout", "300ms", candidate)
	if code != exitBusy || !strings.Contains(errOut, "another baton") {
		t.Fatalf("install while the lock is held: exit %d %s", code, errOut)
	}
}
