package ctl

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// servesEndpoint checks in /proc that process pid holds a listening unix
// socket bound at the endpoint's path (every generation that serves it
// holds it: the socket is handed over, not made again). Which pid made
// the socket (peer.PID) is no help: a library service's first generation
// made it, and may be gone.
func servesEndpoint(name string, _ Peer, pid int) error {
	path, err := Address(name)
	if err != nil {
		return err
	}
	proc := "/proc/" + strconv.Itoa(pid)
	inodes, err := listeningAt(proc+"/net/unix", path)
	if err != nil {
		return fmt.Errorf("reading the sockets of process %d: %v", pid, err)
	}
	if len(inodes) == 0 {
		return fmt.Errorf("no listening socket is bound at %s (seen from process %d)", path, pid)
	}
	fds, err := os.ReadDir(proc + "/fd")
	if err != nil {
		return fmt.Errorf("reading the descriptors of process %d: %v", pid, err)
	}
	for _, fd := range fds {
		l, err := os.Readlink(proc + "/fd/" + fd.Name())
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(l, "socket:["); ok && inodes[strings.TrimSuffix(ino, "]")] {
			return nil
		}
	}
	return fmt.Errorf("process %d does not hold the control socket %s", pid, path)
}

// listeningAt reads a /proc/net/unix table and returns the inodes of the
// listening sockets bound at path.
func listeningAt(table, path string) (map[string]bool, error) {
	f, err := os.Open(table)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const acceptCon = 0x10000 // __SO_ACCEPTCON: listening
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path; the path is
		// the rest of the line (it may hold spaces).
		fs, rest := cutFields(sc.Text(), 7)
		if len(fs) < 7 || rest != path {
			continue
		}
		if flags, err := strconv.ParseUint(fs[3], 16, 32); err != nil || flags&acceptCon == 0 {
			continue
		}
		out[fs[6]] = true
	}
	return out, sc.Err()
}

// cutFields returns the first n fields of line (separated by spaces) and
// the rest of it.
func cutFields(line string, n int) ([]string, string) {
	var fs []string
	for len(fs) < n {
		line = strings.TrimLeft(line, " ")
		i := strings.IndexByte(line, ' ')
		if i < 0 {
			return append(fs, line), ""
		}
		fs, line = append(fs, line[:i]), line[i:]
	}
	return fs, strings.TrimLeft(line, " ")
}

// processInfo reads /proc/PID: parent, users, program file.
func processInfo(pid int) (procInfo, error) {
	proc := "/proc/" + strconv.Itoa(pid)
	b, err := os.ReadFile(proc + "/status")
	if err != nil {
		return procInfo{}, err
	}
	p := procInfo{ppid: -1}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		fs := strings.Fields(v)
		switch {
		case k == "PPid" && len(fs) == 1:
			p.ppid, _ = strconv.Atoi(fs[0])
		case k == "Uid" && len(fs) == 4:
			// real, effective, saved, file system: all must be ours or root
			for _, f := range fs {
				if u, err := strconv.ParseUint(f, 10, 32); err != nil || !trustedUID(uint32(u)) {
					p.untrusted = fmt.Errorf("runs as uids %s (real, effective, saved, fs), not only as us (uid %d) or root", strings.Join(fs, " "), os.Geteuid())
					break
				}
			}
		}
	}
	exe, err := os.Readlink(proc + "/exe")
	if err != nil {
		return procInfo{}, fmt.Errorf("reading its program file: %v", err)
	}
	// A replaced or removed file is named "PATH (deleted)".
	p.exe = strings.TrimSuffix(exe, " (deleted)")
	p.open = func() (*os.File, error) { return os.Open(proc + "/exe") }
	return p, nil
}

// samePath compares two paths of this system (case matters).
func samePath(a, b string) bool { return filepath.Clean(a) == filepath.Clean(b) }
