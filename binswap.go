package baton

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/baton-go/baton/internal/atomicfile"
	"github.com/baton-go/baton/internal/handoff"
	"github.com/baton-go/baton/internal/release"
)

// UpgradeTo installs newBinary at this generation's binary path and
// upgrades to it, through the releases directory beside the installed
// binary (PATH.releases, the one `baton install` and `baton upgrade
// --binary` use; created when missing):
//
//  1. the releases lock is taken (held by another baton: an error wrapping
//     ErrUpgradeInProgress);
//  2. newBinary is checked as `baton upgrade --binary` checks it with its
//     default options (an executable for this OS and CPU, complete, the
//     same Go main module as the installed binary, no process writing it,
//     safe directories, free space); a refusal changes nothing on disk and
//     returns an error wrapping ErrBinary with the check's message. A file
//     that is already a release of this directory (the CLI stages what it
//     checked there, with its own options) is not refused for its module;
//  3. the very copy that was checked becomes a release and is switched in
//     at the installed path atomically (file mode kept; the binary
//     installed before becomes a release too);
//  4. Upgrade runs. If it fails, the previous release is put back at the
//     installed path before UpgradeTo returns: a release that was started
//     and failed (ErrChildExited, ErrReadyTimeout, ErrBinary) is marked
//     failed, so that a later rollback does not go back to it; one refused
//     before it ran (busy, too many draining...) is not.
//
// For a library service UpgradeTo is the one place that puts the previous
// binary back after a failed upgrade (`baton upgrade --binary` and `baton
// rollback` send it their release and only report). Under `baton run`
// the supervisor does the upgrades: UpgradeTo returns ErrSupervised and
// changes nothing.
func (u *Upgrader) UpgradeTo(ctx context.Context, newBinary string) (UpgradeResult, error) {
	if u.supervised {
		return UpgradeResult{}, ErrSupervised
	}
	if !u.binaryMu.TryLock() {
		return UpgradeResult{}, ErrUpgradeInProgress
	}
	defer u.binaryMu.Unlock()
	fi, err := os.Stat(newBinary)
	switch {
	case err != nil:
		return UpgradeResult{}, fmt.Errorf("%w: new binary: %v", ErrBinary, err)
	case !fi.Mode().IsRegular():
		return UpgradeResult{}, fmt.Errorf("%w: new binary %s is not a regular file", ErrBinary, newBinary)
	}
	st, err := release.Open(u.binary, release.StoreOptions{Logger: u.log})
	if err != nil {
		return UpgradeResult{}, fmt.Errorf("%w: releases directory of %s: %v", ErrBinary, u.binary, err)
	}
	if err := st.TryLock(); err != nil {
		if errors.Is(err, release.ErrLocked) {
			return UpgradeResult{}, fmt.Errorf("%w: %v", ErrUpgradeInProgress, err)
		}
		return UpgradeResult{}, fmt.Errorf("%w: locking the releases of %s: %v", ErrBinary, u.binary, err)
	}
	defer st.Unlock()
	staged := isStagedIn(st, newBinary)
	before, _ := release.FileSHA256(st.Installed())
	rep, rel, err := st.CheckAndStage(ctx, newBinary, release.CheckOptions{Force: staged, Staged: staged})
	if err != nil {
		if rep != nil && !rep.OK() {
			if ferr := rep.FirstErr(); ferr != nil {
				err = ferr
			}
		}
		return UpgradeResult{}, fmt.Errorf("%w: %s refused: %v", ErrBinary, newBinary, err)
	}
	// Activate and, on failure, put back inside the upgrade operation: no
	// other upgrade (a signal, another request) can start the binary
	// between the switch on disk and ours, nor after a failure before the
	// previous one is back.
	var putBackErr error
	// The undo may run later, after a failed probation: tail guards
	// putBackErr and returned (UpgradeTo has let the releases lock go).
	var tail sync.Mutex
	returned := false
	activate := func() (func(error), error) {
		if err := st.Activate(rel.ID); err != nil {
			if now, _ := release.FileSHA256(st.Installed()); now == rel.SHA256 && now != before {
				// Switched, but recording it failed: put back what was there.
				if _, _, perr := st.PutBack(rel.SHA256); perr != nil {
					return nil, fmt.Errorf("%w: installing release %s at %s: %v (and putting the previous binary back failed: %v)", ErrBinary, rel.ID, u.binary, err, perr)
				}
			}
			if errors.Is(err, release.ErrBusy) {
				return nil, fmt.Errorf("%w: installing release %s at %s: %v", ErrUpgradeInProgress, rel.ID, u.binary, err)
			}
			return nil, fmt.Errorf("%w: installing release %s at %s: %v", ErrBinary, rel.ID, u.binary, err)
		}
		u.log.Info("release installed; upgrading", "release", rel.ID, "path", st.Installed())
		undo := func(err error) {
			if before == rel.SHA256 {
				return // the same binary was installed already: nothing to put back
			}
			// A failed probation runs this in the background, maybe
			// after UpgradeTo let the releases go: tail orders the two,
			// and the lock is then taken again.
			tail.Lock()
			defer tail.Unlock()
			if returned {
				// The lock is ours no more. Wait for it a little; a
				// deploy that holds it longer has the disk.
				lctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				lerr := st.Lock(lctx)
				cancel()
				if lerr != nil {
					u.log.Error("the new generation died during its probation; the previous release could not be put back (releases lock)", "path", u.binary, "err", lerr)
					return
				}
				defer st.Unlock()
			}
			putBack := st.PutBack // refused before it ran: not a failed release
			if startedAndFailed(err) || errors.Is(err, ErrRolledBack) {
				putBack = st.RollbackFrom
			}
			prev, done, rerr := putBack(rel.SHA256)
			switch {
			case rerr != nil:
				u.log.Error("upgrade failed and the previous release could not be put back", "path", u.binary, "err", rerr)
				putBackErr = rerr
			case done:
				u.log.Info("upgrade failed; previous release put back", "path", u.binary, "release", prev.ID)
			}
		}
		return undo, nil
	}
	res, err := u.upgrade(ctx, activate)
	tail.Lock()
	defer tail.Unlock()
	defer func() { returned = true }() // after the deferred st.Unlock
	if err != nil {
		if putBackErr != nil {
			return res, fmt.Errorf("%w (and putting the previous binary back failed: %v)", err, putBackErr)
		}
		return res, err
	}
	if !staged {
		// The CLI prunes with its own --keep when it staged the release.
		if _, perr := st.Prune(); perr != nil {
			u.log.Warn("pruning old releases", "err", perr)
		}
	}
	return res, nil
}

// startedAndFailed reports whether an upgrade failed because the new
// binary was started and did not make it (rather than being refused before
// it ran).
func startedAndFailed(err error) bool {
	return errors.Is(err, ErrChildExited) || errors.Is(err, ErrReadyTimeout) || errors.Is(err, ErrBinary)
}

// isStagedIn reports whether file is a release of st already (staged,
// with its checks, by `baton upgrade --binary` or `baton install`).
func isStagedIn(st *release.Store, file string) bool {
	abs, err := filepath.Abs(file)
	if err != nil {
		return false
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	id := filepath.Base(filepath.Dir(abs))
	if filepath.Dir(filepath.Dir(abs)) != st.Dir() {
		return false
	}
	r, err := st.Get(id)
	return err == nil && r.Path == abs
}

// asideSuffix marks a binary renamed aside by the process with that pid
// (the releases store's mark).
const asideSuffix = atomicfile.AsideSuffix

// removeStaleBinaries deletes copies of binary renamed aside by processes
// that have exited.
func (u *Upgrader) removeStaleBinaries() {
	matches, _ := filepath.Glob(u.binary + asideSuffix + "*")
	for _, m := range matches {
		pid, err := strconv.Atoi(strings.TrimPrefix(m, u.binary+asideSuffix))
		if err != nil || handoff.Alive(handoff.Proc{PID: pid}) {
			continue
		}
		if err := os.Remove(m); err == nil {
			u.log.Debug("removed a stale binary", "path", m)
		}
	}
}
