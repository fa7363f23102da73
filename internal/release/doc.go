// Package release stages new binaries beside an installed one, refuses bad
// ones before anything is switched, switches the installed path atomically,
// and rolls it back to the last good release on disk.
//
// Layout, for an installed binary /srv/app/web:
//
//	/srv/app/web                        the installed binary (a copy of a release)
//	/srv/app/web.releases/state.json    current and previous release ids (atomic writes)
//	/srv/app/web.releases/.lock         flock / LockFileEx: one writer at a time
//	/srv/app/web.releases/<id>/web      one folder per release
//	/srv/app/web.releases/<id>/release.json
//
// A release id is the first 16 hex digits of the file's sha256, prefixed by
// the main module's version from the Go build info when it has one
// ("v1.4.2-0a1b2c3d4e5f6789"). The same file staged twice is one release.
//
// The API, in the order a deploy uses it:
//
//	st, err := release.Open(path, release.StoreOptions{Keep: 3})
//	err = st.Lock(ctx)                   // or TryLock; Unlock when done
//	rep, rel, err := st.CheckAndStage(ctx, candidate, release.CheckOptions{...})
//	                                     // every check, then the checked copy itself is staged
//	err = st.Activate(rel.ID)            // the installed path now holds rel
//	// ... the service upgrades; if it fails:
//	prev, done, err := st.RollbackFrom(rel.SHA256)
//	st.Prune()                            // keep the last Keep, never current/previous
//
// Check runs every pre-flight check (format for this OS and CPU, Go build
// info and main module, sha256, minisign signature, smoke run, unsafe
// directories, free disk space, writers of the candidate) and returns a
// Report listing each with ok / skipped / failed. Every refusal wraps one of
// the exported sentinels (ErrNotExecutable, ErrModule, ErrChecksum,
// ErrSignature, ErrSmokeRun, ErrUnsafeDir, ErrDiskSpace, ErrBusy), so
// callers test them with errors.Is. A candidate is never run (smoke run)
// unless every check before it passed.
//
// Crash safety: every file the store writes (a staged release, the state
// file, the installed path) is written to a temporary file in the same
// directory, fsynced, renamed into place, and the directory is fsynced. A
// kill or a power cut at any moment leaves the old or the new binary at the
// installed path, never a part of one. On Windows the running .exe is
// renamed aside first (<path>.old-<pid>, removed once it is no longer in
// use), as the baton library does.
//
// Holders names the processes that hold a file (Linux: /proc/*/exe, maps
// and fd; Windows: the Restart Manager), so that a "text file busy" or
// "access denied" becomes "pid 1234 (go) has it open for writing".
//
// A supervisor that rolls back on its own (a probation that fails after the
// CLI has returned) opens the store, TryLocks it (when the lock is held, the
// holder — a CLI still waiting for its upgrade — rolls back itself) and
// Activates the release the serving generation runs; RollbackFrom(the
// failed release's sha256) does nothing when another binary is installed
// already, so two callers never toggle back.
package release
