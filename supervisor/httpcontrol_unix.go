//go:build !windows

package supervisor

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// checkTokenFile refuses a token file that another user owns or that its
// group or others may read or write.
func checkTokenFile(path string, fi fs.FileInfo) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid := int(st.Uid); uid != os.Geteuid() && uid != 0 {
			return fmt.Errorf("%w: %s belongs to uid %d, not to this user (%d) or root", ErrTokenFile, path, uid, os.Geteuid())
		}
	}
	if perm := fi.Mode().Perm(); perm&0o066 != 0 {
		return fmt.Errorf("%w: %s is readable or writable by its group or others (mode %04o): chmod 600 %s", ErrTokenFile, path, perm, path)
	}
	return nil
}
