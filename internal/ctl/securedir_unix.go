//go:build unix

package ctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The runtime directory is walked one component at a time, each opened
// with O_NOFOLLOW relative to its parent, never by following a path: a
// check that follows links sees the directory a link points to now, and
// whoever owns the link can point it elsewhere a moment later (issue 14:
// /tmp/rt -> /run/baton planted by another user, re-pointed at a directory
// of theirs once root's service had passed the checks).
//
// Every name on the way must be one that only we or root can change:
//
//   - the directory holding it belongs to us or root (its owner may always
//     rename entries), and
//   - that directory is not writable by group or others, or it is sticky
//     (as /tmp is) and the entry belongs to us or root (in a sticky
//     directory only an entry's owner can rename or remove it).
//
// A symbolic link passes when it meets the same rules (e.g. /var/run ->
// /run, or macOS's /tmp -> /private/tmp): its target is then walked the
// same way. The runtime directory itself must belong to us and not be
// writable by group or others. When every name on the way passes, using
// the path afterwards (bind, connect) resolves to the directory checked.

// maxLinks bounds the links followed while walking one path (as the
// kernel's ELOOP limit does).
const maxLinks = 40

// trustedUID reports whether files owned by uid are under our control:
// ours, or root's (root can do anything to our files anyway).
func trustedUID(uid uint32) bool { return int(uid) == os.Geteuid() || uid == 0 }

// secureDir checks dir by the walk described above and returns nil when it
// may hold control sockets. With create, missing components are made (mode
// 0700, so ours); without, a missing directory wraps os.ErrNotExist.
// Refusals wrap ErrUnsafeDir and name the offending path.
func secureDir(dir string, create bool) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("control directory %q: %w", dir, err)
	}
	fd, err := walkDir(abs, create)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("control directory %s: %w", abs, err)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: control directory %s belongs to uid %d, not to us (uid %d)", ErrUnsafeDir, abs, st.Uid, os.Geteuid())
	}
	if m := st.Mode & 0o7777; m&0o022 != 0 {
		return fmt.Errorf("%w: control directory %s is writable by other users (mode %04o); chmod go-w %s", ErrUnsafeDir, abs, m, abs)
	}
	return nil
}

// walkDir opens the directory at the absolute path abs by the walk
// described above and returns its descriptor.
func walkDir(abs string, create bool) (int, error) {
	links := 0
restart:
	fd, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	var parent unix.Stat_t
	if err := unix.Fstat(fd, &parent); err != nil {
		unix.Close(fd)
		return -1, err
	}
	done := "/" // the part of abs walked so far, free of links
	rest := strings.Split(strings.TrimPrefix(filepath.Clean(abs), "/"), "/")
	for i := 0; i < len(rest); i++ {
		name := rest[i]
		if name == "" || name == "." {
			continue
		}
		// abs is clean (filepath.Join cleans a link's target joined to
		// the link-free part walked so far, which makes ".." lexical and
		// right): no ".." is met here.
		here := filepath.Join(done, name)
		if !trustedUID(parent.Uid) {
			unix.Close(fd)
			return -1, fmt.Errorf("%w: %s is in %s, which belongs to uid %d (neither us nor root): its owner could replace it", ErrUnsafeDir, here, done, parent.Uid)
		}
		var st unix.Stat_t
		err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) && create {
			err = unix.Mkdirat(fd, name, 0o700)
			if err == nil || errors.Is(err, unix.EEXIST) {
				err = unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
			}
			if err != nil {
				unix.Close(fd)
				return -1, fmt.Errorf("creating control directory %s: %w", here, err)
			}
		}
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("control directory %s: %w", here, err)
		}
		isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
		if isLink && !trustedUID(st.Uid) {
			unix.Close(fd)
			return -1, fmt.Errorf("%w: %s is a symbolic link owned by uid %d (neither us nor root): it could be pointed elsewhere; use a directory path without it", ErrUnsafeDir, here, st.Uid)
		}
		if parent.Mode&0o022 != 0 && (parent.Mode&unix.S_ISVTX == 0 || !trustedUID(st.Uid)) {
			unix.Close(fd)
			if parent.Mode&unix.S_ISVTX == 0 {
				return -1, fmt.Errorf("%w: %s is in %s, which other users may write to (mode %04o): they could replace it", ErrUnsafeDir, here, done, parent.Mode&0o7777)
			}
			return -1, fmt.Errorf("%w: %s belongs to uid %d (neither us nor root) and sits in %s, which others may write to: it could be replaced", ErrUnsafeDir, here, st.Uid, done)
		}
		switch {
		case isLink:
			links++
			if links > maxLinks {
				unix.Close(fd)
				return -1, fmt.Errorf("control directory %s: %w", abs, unix.ELOOP)
			}
			target, err := readlinkat(fd, name)
			unix.Close(fd)
			if err != nil {
				return -1, fmt.Errorf("control directory %s: %w", here, err)
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(done, target)
			}
			abs = filepath.Join(append([]string{target}, rest[i+1:]...)...)
			goto restart
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		default:
			unix.Close(fd)
			return -1, fmt.Errorf("%w: %s is not a directory", ErrUnsafeDir, here)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("control directory %s: %w", here, err)
		}
		var now unix.Stat_t
		if err := unix.Fstat(next, &now); err != nil {
			unix.Close(next)
			return -1, err
		}
		if now.Dev != st.Dev || now.Ino != st.Ino {
			// Replaced between the look and the open: only possible for
			// someone we trust, but say so rather than guess.
			unix.Close(next)
			return -1, fmt.Errorf("%w: %s changed while it was checked", ErrUnsafeDir, here)
		}
		fd, parent, done = next, now, here
	}
	return fd, nil
}

func readlinkat(dirfd int, name string) (string, error) {
	for n := 256; ; n *= 2 {
		buf := make([]byte, n)
		m, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if m < n {
			return string(buf[:m]), nil
		}
	}
}
