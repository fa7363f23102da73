//go:build unix

package release

import (
	"errors"
	"os"
	"syscall"
)

// syncDir makes a rename or a new entry in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// replaceFile renames tmp over dst: atomic, the running binary's text is
// never written to.
func replaceFile(tmp, dst string) (cleanup func(), err error) {
	return func() {}, os.Rename(tmp, dst)
}

func removeStaleAside(string) {}
