package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// notRegular is the refusal of a candidate that is not a regular file.
func notRegular(path string, fi os.FileInfo) error {
	m := fi.Mode()
	switch {
	case m&os.ModeSymlink != 0:
		target, _ := os.Readlink(path)
		return fmt.Errorf("%w: %s is a symbolic link (to %s), not a regular file: give the file itself (a link can be re-pointed between the checks and the copy)", ErrNotExecutable, path, target)
	case m&os.ModeNamedPipe != 0:
		return fmt.Errorf("%w: %s is a FIFO (named pipe), not a regular file", ErrNotExecutable, path)
	case m&os.ModeDevice != 0:
		return fmt.Errorf("%w: %s is a device, not a regular file", ErrNotExecutable, path)
	case m&os.ModeSocket != 0:
		return fmt.Errorf("%w: %s is a socket, not a regular file", ErrNotExecutable, path)
	case m.IsDir():
		return fmt.Errorf("%w: %s is a directory, not a regular file", ErrNotExecutable, path)
	}
	return fmt.Errorf("%w: %s is not a regular file (%v)", ErrNotExecutable, path, m.Type())
}

// testHookCandidateOpened, when set (by tests), is called with the
// candidate's path once it is open and known to be a regular file, before
// any check reads it: what happens to the name from then on must not
// change what is checked and staged.
var testHookCandidateOpened func(path string)

// privateCopy copies size bytes of src (the open candidate, named name)
// into a new directory (in work, "" for the temp dir) that only this user
// can write to, under the same base name (checksums files name it),
// hashing it on the way. A file that is not size bytes long any more
// (shrunk, or grown: still being written) is refused with ErrBusy. ctx
// ends the copy.
func privateCopy(ctx context.Context, src io.ReaderAt, size int64, name, work string) (priv, sum string, n int64, cleanup func(), err error) {
	dir, err := os.MkdirTemp(work, ".check-")
	if err != nil {
		return "", "", 0, nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	priv = filepath.Join(dir, filepath.Base(name))
	// Executable and synced now: the smoke run starts it, and CheckAndStage
	// renames it into the store as it is.
	out, err := os.OpenFile(priv, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		cleanup()
		return "", "", 0, nil, err
	}
	h := sha256.New()
	n, err = io.Copy(io.MultiWriter(out, h), ctxReader{ctx, io.NewSectionReader(src, 0, size)})
	if err == nil && n != size {
		err = fmt.Errorf("%w: %s shrank while it was read (%d of %d bytes): is it still being written?", ErrBusy, name, n, size)
	}
	if err == nil {
		var one [1]byte
		if m, _ := src.ReadAt(one[:], size); m > 0 {
			err = fmt.Errorf("%w: %s grew while it was read (past %d bytes): is it still being written?", ErrBusy, name, size)
		}
	}
	if err == nil {
		err = out.Chmod(0o755) // whatever the umask
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		cleanup()
		return "", "", 0, nil, err
	}
	return priv, hex.EncodeToString(h.Sum(nil)), n, cleanup, nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
