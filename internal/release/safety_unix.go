//go:build unix

package release

import (
	"fmt"
	"os"
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
