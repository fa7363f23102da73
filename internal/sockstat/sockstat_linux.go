package sockstat

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// TCP states as printed in /proc/net/tcp (include/net/tcp_states.h).
const (
	tcpEstablished = 0x01
	tcpSynSent     = 0x02
	tcpSynRecv     = 0x03
	tcpFinWait1    = 0x04
	tcpFinWait2    = 0x05
	tcpTimeWait    = 0x06
	tcpClose       = 0x07
	tcpCloseWait   = 0x08
	tcpLastAck     = 0x09
	tcpListen      = 0x0A
	tcpClosing     = 0x0B
)

// open reports whether a TCP socket in state st is a connection not yet
// closed on both sides.
func open(st uint64) bool {
	switch st {
	case tcpEstablished, tcpSynRecv, tcpFinWait1, tcpFinWait2, tcpCloseWait, tcpLastAck, tcpClosing:
		return true
	}
	return false
}

// /proc/net/unix values.
const (
	unixStream    = 0x0001 // SOCK_STREAM
	unixSeqpacket = 0x0005 // SOCK_SEQPACKET
	unixConnected = 0x03   // SS_CONNECTED
)

func conns(pid int, tcpPorts []int, unixPaths []string) (int, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("sockstat: invalid pid %d", pid)
	}
	inodes, err := socketInodes(pid)
	if err != nil {
		return 0, err
	}
	n := 0
	if len(tcpPorts) > 0 && len(inodes) > 0 {
		for _, name := range [...]string{"tcp", "tcp6"} {
			c, err := scanTable(pid, name, func(line []byte) bool { return tcpLine(line, inodes, tcpPorts) })
			if errors.Is(err, os.ErrNotExist) && name == "tcp6" {
				continue // IPv6 disabled
			}
			if err != nil {
				return 0, err
			}
			n += c
		}
	}
	if len(unixPaths) > 0 && len(inodes) > 0 {
		c, err := scanTable(pid, "unix", func(line []byte) bool { return unixLine(line, inodes, unixPaths) })
		if err != nil {
			return 0, err
		}
		n += c
	}
	return n, nil
}

// socketInodes returns the inode numbers of the sockets in pid's fd table.
func socketInodes(pid int) (map[uint64]struct{}, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("sockstat: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("sockstat: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("sockstat: %w", err)
	}
	inodes := make(map[uint64]struct{}, len(names))
	var linkErr error
	cerr := rc.Control(func(dirfd uintptr) {
		var buf [64]byte // "socket:[18446744073709551615]" fits
		for _, name := range names {
			n, err := unix.Readlinkat(int(dirfd), name, buf[:])
			if err != nil {
				if err == unix.ENOENT {
					continue // closed since the listing
				}
				linkErr = &os.PathError{Op: "readlink", Path: dir + "/" + name, Err: err}
				return
			}
			if ino, ok := socketInode(buf[:n]); ok {
				inodes[ino] = struct{}{}
			}
		}
	})
	if cerr != nil {
		return nil, fmt.Errorf("sockstat: %w", cerr)
	}
	if linkErr != nil {
		return nil, fmt.Errorf("sockstat: %w", linkErr)
	}
	return inodes, nil
}

// socketInode parses a "socket:[12345]" link target.
func socketInode(link []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(link, []byte("socket:["))
	if !ok {
		return 0, false
	}
	rest, ok = bytes.CutSuffix(rest, []byte("]"))
	if !ok {
		return 0, false
	}
	return parseUint(rest, 10)
}

// scanTable streams /proc/<pid>/net/<name>, skipping its header line, and
// counts the lines for which match is true.
func scanTable(pid int, name string, match func([]byte) bool) (int, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/net/" + name)
	if err != nil {
		return 0, fmt.Errorf("sockstat: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	n := 0
	for header := true; ; header = false {
		line, err := r.ReadSlice('\n')
		for err == bufio.ErrBufferFull {
			// Only a unix path could make a line this long, and no
			// path we can be asked for is (sun_path is 108 bytes).
			line = nil
			_, err = r.ReadSlice('\n')
		}
		if !header && len(line) > 0 && match(bytes.TrimSuffix(line, []byte("\n"))) {
			n++
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return 0, fmt.Errorf("sockstat: reading /proc/%d/net/%s: %w", pid, name, err)
		}
	}
}

// tcpLine matches a /proc/net/tcp{,6} line:
//
//	sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
//	0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 12345 ...
func tcpLine(line []byte, inodes map[uint64]struct{}, ports []int) bool {
	var f [10][]byte
	if _, ok := fields(line, f[:]); !ok {
		return false
	}
	_, portHex, ok := bytes.Cut(f[1], []byte(":"))
	if !ok {
		return false
	}
	port, ok := parseUint(portHex, 16)
	if !ok || !hasPort(ports, port) {
		return false
	}
	if st, ok := parseUint(f[3], 16); !ok || !open(st) {
		return false
	}
	return take(inodes, f[9])
}

// unixLine matches a /proc/net/unix line:
//
//	Num       RefCount Protocol Flags    Type St Inode Path
//	0000000000000000: 00000002 00000000 00000000 0001 03 12345 /run/app.sock
//
// The path, absent for an unbound socket, is the rest of the line after one
// space: it may itself contain spaces.
func unixLine(line []byte, inodes map[uint64]struct{}, paths []string) bool {
	var f [7][]byte
	end, ok := fields(line, f[:])
	if !ok {
		return false
	}
	if typ, ok := parseUint(f[4], 16); !ok || typ != unixStream && typ != unixSeqpacket {
		return false
	}
	if st, ok := parseUint(f[5], 16); !ok || st != unixConnected {
		return false
	}
	path, ok := bytes.CutPrefix(line[end:], []byte(" "))
	if !ok || !hasPath(paths, path) {
		return false
	}
	return take(inodes, f[6])
}

// fields fills out with the first len(out) space-separated fields of line and
// returns the offset just past the last one.
func fields(line []byte, out [][]byte) (int, bool) {
	i := 0
	for k := range out {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		j := i
		for j < len(line) && line[j] != ' ' {
			j++
		}
		if j == i {
			return 0, false
		}
		out[k] = line[i:j]
		i = j
	}
	return i, true
}

// take reports whether the decimal inode is in the set, and removes it so
// that an entry listed twice (the kernel tables are read in chunks while they
// change) counts once.
func take(inodes map[uint64]struct{}, field []byte) bool {
	ino, ok := parseUint(field, 10)
	if !ok || ino == 0 {
		return false
	}
	if _, ok := inodes[ino]; !ok {
		return false
	}
	delete(inodes, ino)
	return true
}

func hasPort(ports []int, port uint64) bool {
	for _, p := range ports {
		if uint64(p) == port {
			return true
		}
	}
	return false
}

func hasPath(paths []string, path []byte) bool {
	for _, p := range paths {
		if p == string(path) { // no allocation
			return true
		}
	}
	return false
}

// parseUint parses a hex or decimal number without allocating.
func parseUint(b []byte, base uint64) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 && base == 16 || len(b) > 19 && base == 10 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		var d uint64
		switch {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case base == 16 && 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		case base == 16 && 'A' <= c && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		n = n*base + d
	}
	return n, true
}
