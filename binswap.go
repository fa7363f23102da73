package baton

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/baton-go/baton/internal/atomicfile"
	"github.com/baton-go/baton/internal/handoff"
)

// UpgradeTo installs newBinary at this generation's binary path and
// upgrades to it. The running binary is renamed aside first (a running .exe
// cannot be overwritten on Windows, but it can be renamed; on Unix this
// also keeps the old file intact), the new one is copied next to it and
// renamed into place (never a half-written file at the installed path). If
// the upgrade fails, the previous binary is put back. Copies renamed aside
// are removed by a later generation once their process has exited.
func (u *Upgrader) UpgradeTo(ctx context.Context, newBinary string) (UpgradeResult, error) {
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
	restore, err := installBinary(u.binary, newBinary)
	if err != nil {
		return UpgradeResult{}, fmt.Errorf("%w: installing %s at %s: %v", ErrBinary, newBinary, u.binary, err)
	}
	res, err := u.Upgrade(ctx)
	if err != nil {
		if rerr := restore(); rerr != nil {
			u.log.Error("upgrade failed and the previous binary could not be put back", "path", u.binary, "err", rerr)
			return res, fmt.Errorf("%w (and putting the previous binary back failed: %v)", err, rerr)
		}
		u.log.Info("upgrade failed; previous binary put back", "path", u.binary)
	}
	return res, err
}

// asideSuffix marks a binary renamed aside by the process with that pid
// (the same mark as the releases store's, so either removes the other's).
const asideSuffix = atomicfile.AsideSuffix

// installBinary puts a copy of src at dst and returns how to undo it. The
// running binary is kept aside first (a hard link on Unix, so that dst is
// never missing; a rename on Windows, where a running .exe cannot be
// replaced), then the copy replaces dst atomically.
func installBinary(dst, src string) (restore func() error, err error) {
	aside := dst + asideSuffix + strconv.Itoa(os.Getpid())
	hadOld, err := atomicfile.KeepAside(dst, aside)
	if err != nil {
		return nil, err
	}
	undo := func() error {
		if !hadOld {
			return os.Remove(dst)
		}
		cleanup, err := atomicfile.Replace(aside, dst)
		cleanup()
		return err
	}
	if err := atomicfile.Copy(dst, src, 0o755); err != nil {
		if uerr := undo(); uerr != nil {
			err = fmt.Errorf("%v; restoring: %v", err, uerr)
		}
		return nil, err
	}
	return undo, nil
}

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
