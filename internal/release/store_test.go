package release

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func sha(t *testing.T, p string) string {
	t.Helper()
	s, err := FileSHA256(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openLocked(t *testing.T, installed string, keep int) *Store {
	t.Helper()
	s, err := Open(installed, StoreOptions{Keep: keep})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Unlock() })
	return s
}

func TestStoreStageActivateRollback(t *testing.T) {
	needBins(t)
	dir := t.TempDir()
	installed := copyTo(t, bins["app"], dir, "app")
	v1 := sha(t, installed)
	s := openLocked(t, installed, 3)

	if _, err := s.Rollback(); !errors.Is(err, ErrNoPrevious) {
		t.Fatalf("rollback of a fresh store: %v", err)
	}
	r2, err := s.Stage(bins["app2"], "")
	if err != nil {
		t.Fatal(err)
	}
	if r2.SHA256 != sha(t, bins["app2"]) || r2.ID != r2.SHA256[:16] || sha(t, r2.Path) != r2.SHA256 {
		t.Fatalf("staged release %+v", r2)
	}
	if sha(t, installed) != v1 {
		t.Fatal("Stage changed the installed binary")
	}
	again, err := s.Stage(bins["app2"], r2.SHA256)
	if err != nil || again.ID != r2.ID {
		t.Fatalf("staging the same file again: %v %+v", err, again)
	}
	if _, err := s.Stage(bins["app"], v1); err != nil {
		t.Fatal(err) // v1 is the installed binary, not staged yet
	}
	if _, err := s.Stage(bins["app"], strings.Repeat("1", 64)); !errors.Is(err, ErrChecksum) {
		t.Fatalf("a file changed after its check: %v", err)
	}
	if err := s.Activate(r2.ID); err != nil {
		t.Fatal(err)
	}
	if sha(t, installed) != r2.SHA256 {
		t.Fatal("Activate did not install the release")
	}
	if fi, err := os.Stat(installed); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Fatalf("installed binary not executable: %v", err)
	}
	cur, ok := s.Current()
	prev, pok := s.Previous()
	if !ok || cur.ID != r2.ID || !pok || prev.SHA256 != v1 {
		t.Fatalf("current %+v previous %+v: want the new one and the one installed before (adopted)", cur, prev)
	}
	list, err := s.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v %+v", err, list)
	}
	for _, r := range list {
		if r.Installed != (r.ID == r2.ID) || r.Current != (r.ID == r2.ID) || r.Previous != (r.SHA256 == v1) {
			t.Errorf("list marks %+v", r)
		}
	}

	// Rollback installs the previous one; RollbackFrom the failed one is
	// idempotent (a second caller does not toggle back).
	back, done, err := s.RollbackFrom(r2.SHA256)
	if err != nil || !done || back.SHA256 != v1 || sha(t, installed) != v1 {
		t.Fatalf("rollback: %v done=%v %+v", err, done, back)
	}
	if _, done, err := s.RollbackFrom(r2.SHA256); err != nil || done || sha(t, installed) != v1 {
		t.Fatalf("second RollbackFrom: done=%v %v", done, err)
	}
	// The release that failed is not what a later rollback goes back to.
	if p, ok := s.Previous(); ok {
		t.Fatalf("after a failed upgrade the previous release is %q (the failed one is %q)", p.ID, r2.ID)
	}
	rels, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rels {
		if r.Failed != (r.ID == r2.ID) {
			t.Errorf("release %s: failed=%v", r.ID, r.Failed)
		}
	}
	// State on disk.
	var st state
	b, _ := os.ReadFile(filepath.Join(s.Dir(), "state.json"))
	if err := json.Unmarshal(b, &st); err != nil || st.Current != back.ID || st.Previous != "" || len(st.Failed) != 1 || st.Failed[0] != r2.ID {
		t.Fatalf("state.json: %s %v", b, err)
	}
	// Activating the failed release again is trying it again: the mark
	// goes, and a rollback (on demand) goes back to the good one.
	if err := s.Activate(r2.ID); err != nil {
		t.Fatal(err)
	}
	if p, ok := s.Previous(); !ok || p.ID != back.ID {
		t.Fatalf("previous after re-activating %s: %+v %v", r2.ID, p, ok)
	}
	if again, err := s.Rollback(); err != nil || again.ID != back.ID || sha(t, installed) != v1 {
		t.Fatalf("rollback on demand: %+v %v", again, err)
	}
}

func TestStoreLock(t *testing.T) {
	needBins(t)
	installed := copyTo(t, bins["app"], t.TempDir(), "app")
	a := openLocked(t, installed, 3)
	b, err := Open(installed, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.TryLock(); !errors.Is(err, ErrLocked) || !errors.Is(err, ErrBusy) {
		t.Fatalf("second lock: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100e6)
	defer cancel()
	if err := b.Lock(ctx); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock with a deadline: %v", err)
	}
	if _, err := b.Stage(bins["app2"], ""); !errors.Is(err, ErrNotLocked) {
		t.Fatalf("stage without the lock: %v", err)
	}
	a.Unlock()
	if err := b.TryLock(); err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	b.Unlock()
}

func TestStorePrune(t *testing.T) {
	needBins(t)
	dir := t.TempDir()
	installed := copyTo(t, bins["app"], dir, "app")
	s := openLocked(t, installed, 2)
	// Five distinct releases: copies of app with a byte appended.
	b, _ := os.ReadFile(bins["app2"])
	var ids []string
	for i := 0; i < 5; i++ {
		p := filepath.Join(t.TempDir(), "cand")
		os.WriteFile(p, append(append([]byte{}, b...), byte(i)), 0o755)
		r, err := s.Stage(p, "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	// Activate 0 then 1 (previous 0); 2..4 only staged, and the adopted
	// original binary is older than all of them.
	if err := s.Activate(ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.Activate(ids[1]); err != nil {
		t.Fatal(err)
	}
	removed, err := s.Prune()
	if err != nil {
		t.Fatal(err)
	}
	list, _ := s.List()
	have := map[string]bool{}
	for _, r := range list {
		have[r.ID] = true
	}
	if !have[ids[1]] || !have[ids[0]] {
		t.Fatalf("prune removed the current or the previous release: removed %v, left %v", removed, have)
	}
	if len(list) != 2 || len(removed) != 4 {
		t.Fatalf("keep 2: left %d (%v), removed %v", len(list), have, removed)
	}
	if sha(t, installed) != sha(t, filepath.Join(s.Dir(), ids[1], "app")) {
		t.Fatal("installed binary changed by Prune")
	}
}

func TestActivateDamagedRelease(t *testing.T) {
	needBins(t)
	installed := copyTo(t, bins["app"], t.TempDir(), "app")
	v1 := sha(t, installed)
	s := openLocked(t, installed, 3)
	r, err := s.Stage(bins["app2"], "")
	if err != nil {
		t.Fatal(err)
	}
	// Same size, different content: a damaged release is not installed.
	b, _ := os.ReadFile(r.Path)
	b[len(b)/2] ^= 0xff
	os.WriteFile(r.Path, b, 0o755)
	if err := s.Activate(r.ID); err == nil {
		t.Fatal("a damaged release was activated")
	}
	if sha(t, installed) != v1 {
		t.Fatal("the installed binary changed")
	}
	if runtime.GOOS == "windows" {
		return
	}
}

func TestStoreFollowsSymlink(t *testing.T) {
	needBins(t)
	if runtime.GOOS == "windows" {
		t.Skip("symlinks need privileges")
	}
	dir := t.TempDir()
	real := copyTo(t, bins["app"], dir, "app-real")
	link := filepath.Join(dir, "app")
	if err := os.Symlink("app-real", link); err != nil {
		t.Fatal(err)
	}
	s := openLocked(t, link, 3)
	r, err := s.Stage(bins["app2"], "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Activate(r.ID); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink was replaced: %v %v", fi.Mode(), err)
	}
	want, _ := filepath.EvalSymlinks(real)
	if sha(t, real) != r.SHA256 || s.Installed() != want {
		t.Fatal("the file the symlink points to was not switched")
	}
}

// CheckAndStage stages the very copy its checks read, and nothing when a
// check fails.
func TestCheckAndStage(t *testing.T) {
	needBins(t)
	installed := copyTo(t, bins["app"], t.TempDir(), "app")
	s := openLocked(t, installed, 3)
	ctx := context.Background()
	rep, _, err := s.CheckAndStage(ctx, bins["app2"], CheckOptions{SHA256: strings.Repeat("0", 64)})
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("a failing check: %v\n%s", err, rep)
	}
	if rels, _ := s.List(); len(rels) != 0 {
		t.Fatalf("a refused candidate was staged: %+v", rels)
	}
	rep, rel, err := s.CheckAndStage(ctx, bins["app2"], CheckOptions{})
	if err != nil {
		t.Fatalf("%v\n%s", err, rep)
	}
	if rel.SHA256 != rep.SHA256 || sha(t, rel.Path) != rep.SHA256 || sha(t, bins["app2"]) != rep.SHA256 {
		t.Fatalf("staged %s, checked %s", rel.SHA256, rep.SHA256)
	}
	if left, _ := filepath.Glob(filepath.Join(s.Dir(), ".check-*")); len(left) != 0 {
		t.Errorf("private copies left in the store: %v", left)
	}
}
