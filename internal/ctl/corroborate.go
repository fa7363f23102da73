package ctl

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/baton-go/baton/internal/contract"
)

// Corroborate returns nil when the system itself confirms that the
// service called name, whose status st was answered by peer (DoPeer), runs
// the program installed at path; else an error wrapping ErrUncorroborated
// that says what did not match.
//
// A status is the service's own word: a process that may answer on the
// endpoint (one that passed the peer checks, but changed its user since it
// made the socket, or was taken over) could name any file as its binary,
// and `baton install` or `baton upgrade --binary` would overwrite it. So
// the path is believed only when the system agrees:
//
//   - the process that serves the endpoint (Linux: a process the status
//     names that holds the listening socket at the endpoint's path, in
//     /proc; Windows: the pipe server that answered) runs as our user or
//     root (SYSTEM, an elevated administrator), and
//   - a library service (no supervisor): that process runs path, by the
//     system's account of its program file (the same file, or the path it
//     was started from when the file has been replaced since);
//   - under baton run: the serving generation the status names is a child
//     of that supervisor process, runs as our user or root, and its program
//     file is path or a copy of it (same content).
//
// On systems where baton cannot ask (macOS, the BSDs) it always fails: the
// caller then needs another record (the releases directory) or --path.
func Corroborate(name string, peer Peer, st contract.Status, path string) error {
	if err := corroborate(name, peer, st, path); err != nil {
		return fmt.Errorf("%w: %v", ErrUncorroborated, err)
	}
	return nil
}

// procInfo is what the system says about a process.
type procInfo struct {
	ppid int
	// exe is the path of its program file, as the system records it from
	// when the process was started.
	exe string
	// open opens the very program file it runs (even if it has been
	// replaced at exe since).
	open func() (*os.File, error)
	// untrusted, when set, says why the process's user is neither ours
	// nor root (SYSTEM, an elevated administrator).
	untrusted error
}

func corroborate(name string, peer Peer, st contract.Status, path string) error {
	want, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if r, err := filepath.EvalSymlinks(want); err == nil {
		want = r
	}
	server := st.PID
	if st.Supervisor != nil {
		server = st.Supervisor.PID
	}
	if server <= 0 {
		return fmt.Errorf("the status names no process (pid %d)", server)
	}
	if err := servesEndpoint(name, peer, server); err != nil {
		return err
	}
	sp, err := processInfo(server)
	if err != nil {
		return fmt.Errorf("process %d: %v", server, err)
	}
	if sp.untrusted != nil {
		return fmt.Errorf("process %d, which serves %q, %v", server, name, sp.untrusted)
	}
	if st.Supervisor == nil {
		return runs(server, sp, want)
	}
	if st.PID <= 0 {
		return fmt.Errorf("the supervisor's status names no serving generation (pid %d)", st.PID)
	}
	gp, err := processInfo(st.PID)
	if err != nil {
		return fmt.Errorf("serving generation %d: %v", st.PID, err)
	}
	if gp.ppid != server {
		return fmt.Errorf("process %d, named as the serving generation, is not a child of the supervisor %d (its parent is %d)", st.PID, server, gp.ppid)
	}
	if gp.untrusted != nil {
		return fmt.Errorf("serving generation %d %v", st.PID, gp.untrusted)
	}
	return runsCopyOf(st.PID, gp, want)
}

// runs checks that the process runs the file at path, or was started from
// path (the file there may have been replaced since, as a deploy does).
func runs(pid int, p procInfo, path string) error {
	if sameFile(p, path) || samePath(p.exe, path) {
		return nil
	}
	return fmt.Errorf("process %d runs %s, not %s", pid, p.exe, path)
}

// runsCopyOf checks that the process runs the file at path or a copy of
// it (baton run starts a copy of the installed binary, or a hard link).
func runsCopyOf(pid int, p procInfo, path string) error {
	if sameFile(p, path) {
		return nil
	}
	f, err := p.open()
	if err != nil {
		return fmt.Errorf("reading the program of process %d: %v", pid, err)
	}
	defer f.Close()
	running, err := hashOf(f)
	if err != nil {
		return fmt.Errorf("reading the program of process %d: %v", pid, err)
	}
	g, err := os.Open(path)
	if err != nil {
		return err
	}
	defer g.Close()
	installed, err := hashOf(g)
	if err != nil {
		return err
	}
	if running != installed {
		return fmt.Errorf("process %d runs %s, which is not a copy of %s (its content differs)", pid, p.exe, path)
	}
	return nil
}

func sameFile(p procInfo, path string) bool {
	f, err := p.open()
	if err != nil {
		return false
	}
	defer f.Close()
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

func hashOf(r io.Reader) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// errNoProcessInfo: this system does not tell baton about other processes.
var errNoProcessInfo = errors.New("this system does not tell which program a process runs")
