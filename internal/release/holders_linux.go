package release

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// holdersKnowWriters: /proc tells which holders write.
const holdersKnowWriters = true

// Holders lists the processes that run, map or have open the file at path,
// read from /proc/*/exe, /proc/*/maps and /proc/*/fd (write access from
// /proc/*/fdinfo flags). Processes we may not inspect (other users, unless
// we are root) are not listed. One Holder per process, by pid.
func Holders(path string) ([]Holder, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, err
	}
	same := func(p string) bool {
		var s unix.Stat_t
		return unix.Stat(p, &s) == nil && s.Dev == st.Dev && s.Ino == st.Ino
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	devMaj, devMin := unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev))
	var out []Holder
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := "/proc/" + e.Name()
		h := Holder{PID: pid}
		if same(dir + "/exe") {
			h.How = "is running it"
		}
		if h.How == "" && mapsHold(dir+"/maps", devMaj, devMin, st.Ino) {
			h.How = "has it mapped"
		}
		if fds, err := os.ReadDir(dir + "/fd"); err == nil {
			for _, fd := range fds {
				if !same(dir + "/fd/" + fd.Name()) {
					continue
				}
				if h.How == "" {
					h.How = "has it open (fd " + fd.Name() + ")"
				}
				if fdWritable(dir + "/fdinfo/" + fd.Name()) {
					h.Write = true
					h.How = "has it open for writing (fd " + fd.Name() + ")"
					break
				}
			}
		}
		if h.How == "" {
			continue
		}
		h.Name = procName(dir)
		out = append(out, h)
	}
	return out, nil
}

// mapsHold reports whether a maps file lists the inode on that device.
func mapsHold(maps string, maj, min uint32, ino uint64) bool {
	f, err := os.Open(maps)
	if err != nil {
		return false
	}
	defer f.Close()
	dev := fmt.Sprintf("%02x:%02x", maj, min)
	inoS := strconv.FormatUint(ino, 10)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// address perms offset dev inode path
		fs := strings.Fields(sc.Text())
		if len(fs) >= 5 && fs[4] == inoS && strings.EqualFold(fs[3], dev) {
			return true
		}
	}
	return false
}

// fdWritable reads the open flags from an fdinfo file.
func fdWritable(fdinfo string) bool {
	b, err := os.ReadFile(fdinfo)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return err == nil && flags&unix.O_ACCMODE != unix.O_RDONLY
		}
	}
	return false
}

func procName(dir string) string {
	if b, err := os.ReadFile(dir + "/comm"); err == nil {
		return strings.TrimSpace(string(b))
	}
	if p, err := os.Readlink(dir + "/exe"); err == nil {
		return filepath.Base(p)
	}
	return "?"
}

// heldPath names the open file f itself for Holders (/proc/self/fd/N),
// whatever has become of its name since it was opened.
func heldPath(f *os.File, _ string) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }
