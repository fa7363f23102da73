package release

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/baton-go/baton/internal/atomicfile"
)

var (
	// ErrLocked means another process holds the releases lock (it wraps
	// ErrBusy).
	ErrLocked = fmt.Errorf("%w: another baton is changing these releases", ErrBusy)
	// ErrNoPrevious means there is no previous release to roll back to.
	ErrNoPrevious = errors.New("no previous release to roll back to")
	// ErrUnknownRelease means no release has that id.
	ErrUnknownRelease = errors.New("no such release")
	// ErrNotLocked means a changing call was made without Lock.
	ErrNotLocked = errors.New("the releases lock is not held (call Lock first)")
)

// DefaultKeep is how many releases Prune keeps by default.
const DefaultKeep = 3

// StoreOptions configures a Store.
type StoreOptions struct {
	// Keep is how many releases Prune keeps (default 3); the current and
	// the previous release are always kept.
	Keep int
	// Logger receives what the store does (default: discarded).
	Logger *slog.Logger
}

// Release is one staged binary.
type Release struct {
	ID        string    `json:"id"`
	Path      string    `json:"path"`
	SHA256    string    `json:"sha256"`
	Size      int64     `json:"size"`
	Version   string    `json:"version,omitempty"`
	Module    string    `json:"module,omitempty"`
	GoVersion string    `json:"go_version,omitempty"`
	Source    string    `json:"source,omitempty"` // where it was staged from
	StagedAt  time.Time `json:"staged_at"`
	// Filled in by List:
	Installed bool `json:"installed"` // the installed path holds this release now
	Current   bool `json:"current"`   // the state file's current release
	Previous  bool `json:"previous"`  // what Rollback would install
	Failed    bool `json:"failed"`    // an upgrade to it failed (RollbackFrom); Rollback skips it
}

// state is the small state file: which release is current, which one a
// rollback installs, and the order of activations (most recent first).
type state struct {
	Current  string   `json:"current,omitempty"`
	Previous string   `json:"previous,omitempty"`
	History  []string `json:"history,omitempty"`
	// Failed lists releases an upgrade to which failed: a later rollback
	// does not go back to them. Activating one again clears its mark.
	Failed []string `json:"failed,omitempty"`
}

// Store is the releases directory of one installed binary.
type Store struct {
	installed string
	dir       string
	keep      int
	log       *slog.Logger
	lockFile  *os.File
}

// ReleasesDir is where the releases of the binary installed at installed
// live: "<dir>/<base>.releases".
func ReleasesDir(installed string) string {
	return filepath.Join(filepath.Dir(installed), filepath.Base(installed)+".releases")
}

// Open opens (creating it, mode 0700, when missing) the releases
// directory of the binary installed at installed (symlinks resolved). It
// changes nothing else.
func Open(installed string, o StoreOptions) (*Store, error) {
	abs, err := resolveInstalled(installed)
	if err != nil {
		return nil, err
	}
	if o.Keep <= 0 {
		o.Keep = DefaultKeep
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{installed: abs, dir: ReleasesDir(abs), keep: o.Keep, log: o.Logger}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, err
	}
	return s, nil
}

// resolveInstalled makes installed absolute and follows a symlink: the
// file it points to is what gets replaced (replacing the link by a file
// would break a symlink-based layout).
func resolveInstalled(installed string) (string, error) {
	abs, err := filepath.Abs(installed)
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	return abs, nil
}

// Managed reports whether the binary installed at installed (a symlink is
// followed, as Open does) has a releases directory: it was installed by
// baton install or baton upgrade --binary. Nothing is created.
func Managed(installed string) bool {
	abs, err := resolveInstalled(installed)
	if err != nil {
		return false
	}
	fi, err := os.Stat(ReleasesDir(abs))
	return err == nil && fi.IsDir()
}

// Recorded returns nil when our own records say that a binary is
// installed at installed (a symlink is followed, as Open does): its
// releases directory exists, made by baton install, baton upgrade --binary
// or a service's UpgradeTo, and it and the installed binary's directory
// are directories (not links) that only we or root control (owned by us
// or root, not writable by others; Windows: owned by us, SYSTEM or the
// Administrators, no write access for everyone). Another user cannot make
// such a record, so a path that has one is a path where we, or root,
// installed before. Otherwise the error says what is missing.
func Recorded(installed string) error {
	abs, err := resolveInstalled(installed)
	if err != nil {
		return err
	}
	for _, d := range []string{ReleasesDir(abs), filepath.Dir(abs)} {
		if err := trustedDir(d); err != nil {
			return err
		}
	}
	return nil
}

// Installed is the installed binary's path.
func (s *Store) Installed() string { return s.installed }

// Dir is the releases directory.
func (s *Store) Dir() string { return s.dir }

// Lock takes the store's exclusive lock, waiting until ctx ends (then
// ErrLocked). Every changing call needs it; it is held until Unlock or the
// process's death.
func (s *Store) Lock(ctx context.Context) error {
	for {
		err := s.TryLock()
		if !errors.Is(err, ErrLocked) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%s, waited %v)", ErrLocked, filepath.Join(s.dir, ".lock"), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TryLock takes the lock without waiting; ErrLocked when another holds it.
func (s *Store) TryLock() error {
	if s.lockFile != nil {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(s.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	ok, err := tryLock(f)
	if err != nil || !ok {
		f.Close()
		if err == nil {
			err = ErrLocked
		}
		return err
	}
	s.lockFile = f
	// Under the lock, so as not to race a switch between its two renames.
	if atomicfile.Recover(s.installed) {
		s.log.Warn("the installed binary was missing (a crash during a switch); its copy renamed aside is back", "path", s.installed)
	}
	return nil
}

// Unlock releases the lock.
func (s *Store) Unlock() error {
	if s.lockFile == nil {
		return nil
	}
	err := unlock(s.lockFile)
	if cerr := s.lockFile.Close(); err == nil {
		err = cerr
	}
	s.lockFile = nil
	return err
}

func (s *Store) locked() error {
	if s.lockFile == nil {
		return ErrNotLocked
	}
	return nil
}

// hasCurrentRelease reports whether the binary installed at inst (resolved)
// has a releases directory whose state names a current release.
func hasCurrentRelease(inst string) bool {
	st, err := readStateFile(ReleasesDir(inst))
	return err == nil && st.Current != ""
}

func (s *Store) readState() (state, error) { return readStateFile(s.dir) }

// readStateFile reads dir's state.json (an empty state when there is none).
func readStateFile(dir string) (state, error) {
	var st state
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", filepath.Join(dir, "state.json"), err)
	}
	return st, nil
}

func (s *Store) writeState(st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(s.dir, "state.json"), 0o600, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

// writeAtomic is atomicfile.Write: after a crash at any moment path holds
// the old or the new content, never a part.
var writeAtomic = atomicfile.Write

var idRE = regexp.MustCompile(`^(?:([A-Za-z0-9._+-]{1,64})-)?([0-9a-f]{16})$`)

var unsafeVersion = regexp.MustCompile(`[^A-Za-z0-9._+-]`)

func releaseID(sum, version string) string {
	if version == "" || version == "(devel)" {
		return sum[:16]
	}
	v := unsafeVersion.ReplaceAllString(version, "_")
	if len(v) > 64 {
		v = v[:64]
	}
	return v + "-" + sum[:16]
}

// List returns the complete releases, most recently staged first, with
// Installed, Current and Previous filled in.
func (s *Store) List() ([]Release, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	st, err := s.readState()
	if err != nil {
		return nil, err
	}
	installedSum, _ := fileSHA256(s.installed)
	var out []Release
	for _, e := range ents {
		if !e.IsDir() || !idRE.MatchString(e.Name()) {
			continue
		}
		r, err := s.release(e.Name())
		if err != nil {
			continue // incomplete (a stage cut short): ignored, redone by Stage
		}
		r.Installed = r.SHA256 == installedSum
		r.Current = r.ID == st.Current
		r.Previous = r.ID == st.Previous
		r.Failed = slices.Contains(st.Failed, r.ID)
		out = append(out, r)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].StagedAt.After(out[j].StagedAt) })
	return out, nil
}

// release reads a release's metadata; it is complete when its binary is
// there too.
func (s *Store) release(id string) (Release, error) {
	var r Release
	b, err := os.ReadFile(filepath.Join(s.dir, id, "release.json"))
	if err != nil {
		return r, fmt.Errorf("%w %s: %v", ErrUnknownRelease, id, err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("release %s: %w", id, err)
	}
	r.ID = id
	r.Path = filepath.Join(s.dir, id, filepath.Base(s.installed))
	fi, err := os.Stat(r.Path)
	if err != nil || fi.Size() != r.Size {
		return r, fmt.Errorf("%w %s: incomplete", ErrUnknownRelease, id)
	}
	return r, nil
}

// Get returns the release with that id.
func (s *Store) Get(id string) (Release, error) { return s.release(id) }

// Current is the release the state file records as installed.
func (s *Store) Current() (Release, bool) {
	st, err := s.readState()
	if err != nil || st.Current == "" {
		return Release{}, false
	}
	r, err := s.release(st.Current)
	return r, err == nil
}

// Previous is the release Rollback would install.
func (s *Store) Previous() (Release, bool) {
	st, err := s.readState()
	if err != nil || st.Previous == "" {
		return Release{}, false
	}
	r, err := s.release(st.Previous)
	return r, err == nil
}

// bySHA finds a complete release with that sha256.
func (s *Store) bySHA(sum string) (Release, bool) {
	if len(sum) != 64 {
		return Release{}, false
	}
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		if m := idRE.FindStringSubmatch(e.Name()); m != nil && e.IsDir() && m[2] == sum[:16] {
			if r, err := s.release(e.Name()); err == nil && r.SHA256 == sum {
				return r, true
			}
		}
	}
	return Release{}, false
}

// Stage copies candidate into the store (temp file, fsync, rename, fsync
// directory) and returns its release; the same content staged before is
// not copied again. When wantSHA is set (the sha256 Check saw), a
// candidate changed since is refused with ErrChecksum. Needs the lock.
func (s *Store) Stage(candidate, wantSHA string) (Release, error) {
	if err := s.locked(); err != nil {
		return Release{}, err
	}
	s.removeLeftovers()
	if wantSHA != "" {
		// Already staged: nothing to copy (Activate verifies the
		// release's content against its sha256 anyway).
		if r, ok := s.bySHA(strings.ToLower(wantSHA)); ok {
			return r, nil
		}
	}
	// Copied into the store while hashing (as for the checks): what is
	// staged is exactly what was hashed, whatever happens to candidate.
	f, fi, err := openCandidate(candidate)
	if err != nil {
		return Release{}, fmt.Errorf("staging %s: %w", candidate, err)
	}
	defer f.Close()
	tmp, sum, n, cleanup, err := privateCopy(context.Background(), f, fi.Size(), candidate, s.dir)
	if err != nil {
		return Release{}, fmt.Errorf("staging %s: %w", candidate, err)
	}
	defer cleanup()
	if wantSHA != "" && !strings.EqualFold(sum, wantSHA) {
		return Release{}, fmt.Errorf("%w: %s changed after it was checked (sha256 %s, checked %s)", ErrChecksum, candidate, sum, wantSHA)
	}
	return s.stageFile(tmp, sum, n, candidate)
}

// stageFile makes the synced file tmp (in the store's file system, with
// sha256 sum and size n) a release, by renaming it into its folder.
func (s *Store) stageFile(tmp, sum string, n int64, source string) (Release, error) {
	if r, ok := s.bySHA(sum); ok {
		s.log.Info("release already staged", "id", r.ID)
		return r, nil
	}
	r := Release{SHA256: sum, Size: n, StagedAt: time.Now().UTC()}
	if abs, err := filepath.Abs(source); err == nil {
		r.Source = abs
	}
	if bi, err := readBuildInfo(tmp); err == nil {
		r.Version, r.Module, r.GoVersion = bi.Main.Version, bi.Main.Path, bi.GoVersion
	}
	r.ID = releaseID(sum, r.Version)
	rdir := filepath.Join(s.dir, r.ID)
	if other, err := s.release(r.ID); err == nil && other.SHA256 != sum {
		// Ids keep 64 bits of the sha256: never let another file take a
		// kept release's place.
		return Release{}, fmt.Errorf("release id %s is taken by another file (sha256 %s, this one %s): remove %s or rename the version", r.ID, other.SHA256, sum, rdir)
	}
	if err := os.MkdirAll(rdir, 0o700); err != nil {
		return Release{}, err
	}
	r.Path = filepath.Join(rdir, filepath.Base(s.installed))
	if err := os.Rename(tmp, r.Path); err != nil {
		return Release{}, err
	}
	if err := atomicfile.SyncDir(rdir); err != nil {
		return Release{}, err
	}
	meta, _ := json.MarshalIndent(r, "", "  ")
	// The metadata last: a release without it is incomplete and ignored.
	if err := writeAtomic(filepath.Join(rdir, "release.json"), 0o600, func(w io.Writer) error {
		_, err := w.Write(append(meta, '\n'))
		return err
	}); err != nil {
		return Release{}, err
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return Release{}, err
	}
	s.log.Info("release staged", "id", r.ID, "sha256", sum, "from", source)
	return r, nil
}

// CheckAndStage runs every check on candidate (Check) and, when they pass,
// stages the very copy the checks read: it is made in the store (0700)
// while hashing, so nothing can change between what was checked and what
// is staged, and the file is copied once instead of twice. Needs the lock.
func (s *Store) CheckAndStage(ctx context.Context, candidate string, o CheckOptions) (*Report, Release, error) {
	if err := s.locked(); err != nil {
		return nil, Release{}, err
	}
	s.removeLeftovers()
	o.WorkDir = s.dir
	if o.Installed == "" {
		o.Installed = s.installed
	}
	var rel Release
	rep, err := check(ctx, candidate, o, func(priv, sum string, size int64) error {
		var err error // the private copy is executable and synced already
		rel, err = s.stageFile(priv, sum, size, candidate)
		return err
	})
	return rep, rel, err
}

// removeLeftovers deletes temporary files of stages and switches cut
// short. Those beside the installed binary only when older than 10
// minutes: baton libraries before Upgrader.UpgradeTo went through this
// store wrote the same names without our lock.
func (s *Store) removeLeftovers() {
	// Temporary files of stages by earlier versions of baton.
	old, _ := filepath.Glob(filepath.Join(s.dir, ".stage-*"))
	for _, f := range old {
		os.Remove(f)
	}
	// Private copies of checks and stages cut short: only old ones, a
	// check (which runs without the lock) may be running now.
	checks, _ := filepath.Glob(filepath.Join(s.dir, ".check-*"))
	for _, d := range checks {
		if fi, err := os.Stat(d); err == nil && time.Since(fi.ModTime()) > 10*time.Minute {
			os.RemoveAll(d)
		}
	}
	more, _ := filepath.Glob(filepath.Join(filepath.Dir(s.installed), "."+filepath.Base(s.installed)+".new-*"))
	for _, f := range more {
		if fi, err := os.Stat(f); err == nil && time.Since(fi.ModTime()) > 10*time.Minute {
			os.Remove(f)
		}
	}
}

// adopt makes sure the binary installed now is a release (staging it when
// it is not, e.g. the very first install, or a file copied by hand) and
// returns it; ok is false when nothing is installed.
func (s *Store) adopt() (Release, bool, error) {
	if _, err := os.Stat(s.installed); errors.Is(err, os.ErrNotExist) {
		return Release{}, false, nil
	}
	sum, err := fileSHA256(s.installed)
	if err != nil {
		return Release{}, false, err
	}
	if r, ok := s.bySHA(sum); ok {
		return r, true, nil
	}
	r, err := s.Stage(s.installed, sum)
	if err != nil {
		return Release{}, false, fmt.Errorf("keeping the installed binary as a release: %w", err)
	}
	return r, true, nil
}

// Activate installs release id at the installed path atomically: a copy
// is written beside the installed path (temp file, fsync), renamed over it
// (on Windows the running .exe is renamed aside first) and the directory
// is fsynced; then the state records id as current and what was installed
// before as previous. The release is verified against its sha256 first.
// Needs the lock.
func (s *Store) Activate(id string) error {
	if err := s.locked(); err != nil {
		return err
	}
	r, err := s.release(id)
	if err != nil {
		return err
	}
	if sum, err := fileSHA256(r.Path); err != nil || sum != r.SHA256 {
		return fmt.Errorf("release %s is damaged (sha256 %s, recorded %s): stage it again", id, sum, r.SHA256)
	}
	from, had, err := s.adopt()
	if err != nil {
		return err
	}
	st, err := s.readState()
	if err != nil {
		return err
	}
	if !had || from.ID != r.ID {
		if err := s.install(r); err != nil {
			return err
		}
	}
	if had && from.ID != r.ID {
		st.Previous = from.ID
	} else if st.Current != r.ID && st.Current != "" {
		st.Previous = st.Current
	}
	st.Failed = remove(st.Failed, r.ID) // activating a release is trying it again
	if slices.Contains(st.Failed, st.Previous) {
		// Rolling back to a release that failed would start it again.
		st.Previous = ""
		for _, id := range st.History {
			if _, err := s.release(id); err == nil && id != r.ID && !slices.Contains(st.Failed, id) {
				st.Previous = id
				break
			}
		}
	}
	st.Current = r.ID
	st.History = append([]string{r.ID}, remove(st.History, r.ID)...)
	if err := s.writeState(st); err != nil {
		return fmt.Errorf("recording release %s as current (it is installed): %w", r.ID, err)
	}
	s.log.Info("release activated", "id", r.ID, "path", s.installed, "previous", st.Previous)
	return nil
}

// install copies release r over the installed path with the installed
// binary's permission bits (a 0700 binary stays 0700; only the owner's
// execute bit is added), 0755 when nothing is installed.
func (s *Store) install(r Release) error {
	mode := os.FileMode(0o755)
	if fi, err := os.Stat(s.installed); err == nil {
		mode = fi.Mode().Perm() | 0o100
	}
	err := atomicfile.Copy(s.installed, r.Path, mode)
	var le *os.LinkError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &le) && isBusy(err): // the switch itself
		return busyError(s.installed, fmt.Errorf("switching to release %s: %v", r.ID, err))
	case errors.As(err, &le):
		return fmt.Errorf("switching %s to release %s: %w", s.installed, r.ID, err)
	}
	return fmt.Errorf("copying release %s beside %s: %w", r.ID, s.installed, err)
}

func remove(list []string, id string) []string {
	out := list[:0:0]
	for _, x := range list {
		if x != id {
			out = append(out, x)
		}
	}
	return out
}

// Rollback installs the previous release (which then becomes current, and
// the one it replaces previous). Needs the lock.
func (s *Store) Rollback() (Release, error) {
	if err := s.locked(); err != nil {
		return Release{}, err
	}
	st, err := s.readState()
	if err != nil {
		return Release{}, err
	}
	if st.Previous == "" {
		return Release{}, ErrNoPrevious
	}
	if err := s.Activate(st.Previous); err != nil {
		return Release{}, fmt.Errorf("rolling back to %s: %w", st.Previous, err)
	}
	return s.release(st.Previous)
}

// RollbackFrom rolls back only when the installed binary has sha256 sum
// (the release that failed): safe to call from two places (the CLI that
// ran the upgrade, a supervisor whose probation failed) without toggling
// back. done is false when the installed binary was another one already.
// Needs the lock.
func (s *Store) RollbackFrom(sum string) (r Release, done bool, err error) {
	return s.rollbackIfInstalled(sum, true)
}

// PutBack is RollbackFrom for a release that never ran (the upgrade was
// refused before the new binary was started: busy, too many draining...):
// the previous release goes back, and sum is not marked failed.
func (s *Store) PutBack(sum string) (r Release, done bool, err error) {
	return s.rollbackIfInstalled(sum, false)
}

// rollbackIfInstalled rolls back when the installed binary has sha256 sum,
// marking that release failed first if markFailed.
func (s *Store) rollbackIfInstalled(sum string, markFailed bool) (r Release, done bool, err error) {
	if err := s.locked(); err != nil {
		return Release{}, false, err
	}
	cur, err := fileSHA256(s.installed)
	if err != nil {
		return Release{}, false, err
	}
	if !strings.EqualFold(cur, sum) {
		return Release{}, false, nil
	}
	if markFailed {
		if err := s.MarkFailed(sum); err != nil {
			return Release{}, false, err
		}
	}
	r, err = s.Rollback()
	return r, err == nil, err
}

// MarkFailed records that an upgrade to the release with sha256 sum failed:
// Rollback does not go back to it (until it is activated again). Unknown
// releases are ignored. Needs the lock.
func (s *Store) MarkFailed(sum string) error {
	if err := s.locked(); err != nil {
		return err
	}
	failed, ok := s.bySHA(strings.ToLower(sum))
	if !ok {
		return nil
	}
	st, err := s.readState()
	if err != nil {
		return err
	}
	st.Failed = append(remove(st.Failed, failed.ID), failed.ID)
	if st.Previous == failed.ID {
		st.Previous = ""
	}
	return s.writeState(st)
}

// Prune removes the oldest releases beyond Keep, never the current, the
// previous or the installed one. It returns the ids removed. Needs the lock.
func (s *Store) Prune() ([]string, error) {
	if err := s.locked(); err != nil {
		return nil, err
	}
	s.removeLeftovers()
	rels, err := s.List()
	if err != nil {
		return nil, err
	}
	st, err := s.readState()
	if err != nil {
		return nil, err
	}
	// Order: most recently activated first, then most recently staged.
	rank := map[string]int{}
	for i, id := range st.History {
		rank[id] = i
	}
	sort.SliceStable(rels, func(i, j int) bool {
		ri, iok := rank[rels[i].ID]
		rj, jok := rank[rels[j].ID]
		switch {
		case iok && jok:
			return ri < rj
		case iok != jok:
			return iok
		}
		return rels[i].StagedAt.After(rels[j].StagedAt)
	})
	var removed []string
	kept := 0
	for _, r := range rels {
		if r.Current || r.Previous || r.Installed || kept < s.keep {
			kept++
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, r.ID)); err != nil {
			return removed, err
		}
		removed = append(removed, r.ID)
		st.History = remove(st.History, r.ID)
	}
	if len(removed) > 0 {
		if err := s.writeState(st); err != nil {
			return removed, err
		}
		s.log.Info("releases pruned", "removed", removed)
	}
	return removed, atomicfile.SyncDir(s.dir)
}
