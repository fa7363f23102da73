package release

import (
	"fmt"
	"os"

	"golang.org/x/sys/windows"
)

// Rights that let a principal add or change files in a directory:
// FILE_ADD_FILE (= FILE_WRITE_DATA), FILE_ADD_SUBDIRECTORY (=
// FILE_APPEND_DATA), FILE_DELETE_CHILD (0x40), and the generic or
// ownership rights that imply or grant them.
const dirWriteMask = windows.FILE_WRITE_DATA | windows.FILE_APPEND_DATA | 0x40 |
	windows.GENERIC_WRITE | windows.GENERIC_ALL | windows.WRITE_DAC | windows.WRITE_OWNER

// dirSafe reads the directory's DACL and refuses it when an allow entry
// grants Everyone, Users or Authenticated Users (the principals any local
// account belongs to) a right to add or change files. A missing (NULL)
// DACL grants everyone everything. Deny entries and inherit-only entries
// are not weighed against allows: an allow for those groups is refused.
func dirSafe(dir string) error {
	sd, err := windows.GetNamedSecurityInfo(dir, windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		return fmt.Errorf("%s: reading its ACL: %v", dir, err)
	}
	dacl, _, err := sd.DACL()
	if err != nil || dacl == nil {
		return fmt.Errorf("%s has no DACL: everyone may write to it", dir)
	}
	var wide []*windows.SID
	for _, t := range []windows.WELL_KNOWN_SID_TYPE{windows.WinWorldSid, windows.WinBuiltinUsersSid, windows.WinAuthenticatedUserSid} {
		if s, err := windows.CreateWellKnownSid(t); err == nil {
			wide = append(wide, s)
		}
	}
	for i := uint32(0); i < uint32(dacl.AceCount); i++ {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			continue
		}
		if ace.Header.AceType != windows.ACCESS_ALLOWED_ACE_TYPE || ace.Header.AceFlags&windows.INHERIT_ONLY_ACE != 0 {
			continue
		}
		sid := (*windows.SID)(unsafePointer(&ace.SidStart))
		if ace.Mask&dirWriteMask == 0 {
			continue
		}
		for _, w := range wide {
			if sid.Equals(w) {
				name, dom, _, _ := sid.LookupAccount("")
				return fmt.Errorf("%s grants %s\\%s (%s) write access (mask %#x); a binary or DLL could be planted there", dir, dom, name, sid, ace.Mask)
			}
		}
	}
	return nil
}

// freeSpace returns the bytes available to us in dir's volume.
func freeSpace(dir string) (uint64, error) {
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return 0, err
	}
	var free, total, totalFree uint64
	if err := windows.GetDiskFreeSpaceEx(p, &free, &total, &totalFree); err != nil {
		return 0, err
	}
	return free, nil
}

// trustedDir returns nil when dir is a directory (not a link or junction)
// owned by us, SYSTEM or the Administrators whose DACL gives no write
// access to everyone (dirSafe).
func trustedDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() || fi.Mode()&os.ModeSymlink != 0 || fi.Mode()&os.ModeIrregular != 0 {
		return fmt.Errorf("%s is not a plain directory (%v)", dir, fi.Mode().Type())
	}
	sd, err := windows.GetNamedSecurityInfo(dir, windows.SE_FILE_OBJECT, windows.OWNER_SECURITY_INFORMATION)
	if err != nil {
		return fmt.Errorf("%s: reading its owner: %v", dir, err)
	}
	owner, _, err := sd.Owner()
	if err != nil || owner == nil {
		return fmt.Errorf("%s: reading its owner: %v", dir, err)
	}
	me, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return err
	}
	if !owner.Equals(me.User.Sid) && !owner.IsWellKnown(windows.WinLocalSystemSid) && !owner.IsWellKnown(windows.WinBuiltinAdministratorsSid) {
		return fmt.Errorf("%s is owned by %s, neither us (%s), SYSTEM nor the Administrators", dir, owner, me.User.Sid)
	}
	return dirSafe(dir)
}
