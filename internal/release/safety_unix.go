//go:build unix

package release

import (
	"fmt"
	"os"
	"syscall"
)

// dirSafe refuses a directory that users other than its owner may write
// to (group or other write bit). The sticky bit does not make it safe: it
// only stops others from removing our files, not from adding theirs (a
// plugin, a config, a binary found by a relative path) beside the binary.
func dirSafe(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if m := fi.Mode().Perm(); m&0o022 != 0 {
		return fmt.Errorf("%s has mode %v: writable by %s; a binary could be planted there (chmod go-w %s)", dir, fi.Mode().Perm(), who(m), dir)
	}
	return nil
}

func who(m os.FileMode) string {
	switch {
	case m&0o022 == 0o022:
		return "group and others"
	case m&0o002 != 0:
		return "others"
	}
	return "its group"
}

// trustedDir returns nil when dir is a directory (not a link) owned by us
// or root that others may not write to.
func trustedDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory (%v)", dir, fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() && st.Uid != 0 {
		return fmt.Errorf("%s belongs to uid %d, neither us (uid %d) nor root", dir, st.Uid, os.Geteuid())
	}
	if m := fi.Mode().Perm(); m&0o022 != 0 {
		return fmt.Errorf("%s has mode %v: writable by %s", dir, m, who(m))
	}
	return nil
}
