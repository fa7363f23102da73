package handoff

import (
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FreeBSD (13.0 and later) says who connected in LOCAL_PEERCRED: struct
// xucred of <sys/ucred.h> ends in a union of the old unused pointer
// (_cr_unused1) and cr_pid, the pid of the process that called connect(2)
// (the kernel fills it when the connection is made, as SO_PEERCRED on
// Linux). golang.org/x/sys/unix (v0.47.0) declares that union as a blank
// pointer field (`_ *byte`) in Xucred, so the pid cannot be named there:
// peerXucred mirrors the layout with the union as a pointer-sized,
// pointer-aligned word, and cr_pid is its first four bytes (every union
// member starts at the union's offset, on either byte order).
//
// The layout, field by field: cr_version u_int, cr_uid uid_t (uint32),
// cr_ngroups short (+2 bytes of padding), cr_groups gid_t[XU_NGROUPS=16],
// then the union at the next pointer boundary: 88 bytes on 64-bit
// platforms, 80 on 32-bit, as unix.SizeofXucred (checked at compile time
// below). Kernels before 13.0 leave the union zero (the structure is
// zeroed before it is filled): pid 0 is reported as "cannot tell".
type peerXucred struct {
	version uint32
	uid     uint32
	ngroups int16
	groups  [16]uint32
	union   uintptr // cr_pid (pid_t, int32) in its first four bytes
}

// Compile-time checks that peerXucred is x/sys's Xucred, byte for byte:
// the index is out of range (or the constant overflows) unless the sizes
// and the union's offset agree.
var (
	_ = [1]struct{}{}[unsafe.Sizeof(peerXucred{})-unix.SizeofXucred]
	_ = [1]struct{}{}[unsafe.Sizeof(unix.Xucred{})-unix.SizeofXucred]
	_ = [1]struct{}{}[unsafe.Offsetof(peerXucred{}.union)-(unix.SizeofXucred-unsafe.Sizeof(uintptr(0)))]
)

// xucredVersion is XUCRED_VERSION of <sys/ucred.h> (x/sys does not
// export it): a structure of another version is not read.
const xucredVersion = 0

// peerPID is the pid of the process at the other end of c, as the kernel
// saw it connect (LOCAL_PEERCRED, cr_pid); ok is false where it cannot
// tell (an error, another xucred version, or a kernel before 13.0).
func peerPID(c *net.UnixConn) (pid int, ok bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var x *unix.Xucred
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		x, gerr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	}); err != nil || gerr != nil || x == nil {
		return 0, false
	}
	return xucredPID((*peerXucred)(unsafe.Pointer(x)))
}

// xucredPID reads cr_pid out of a filled xucred.
func xucredPID(x *peerXucred) (int, bool) {
	if x.version != xucredVersion {
		return 0, false
	}
	pid := *(*int32)(unsafe.Pointer(&x.union))
	if pid <= 0 {
		return 0, false
	}
	return int(pid), true
}
