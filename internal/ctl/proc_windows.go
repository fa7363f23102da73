package ctl

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/windows"
)

// tokenOwner is TOKEN_OWNER.
type tokenOwner struct{ Owner *windows.SID }

// trustedProcess returns nil when process pid runs as our user, as
// SYSTEM, or elevated as an administrator (its token's default owner is
// the Administrators group), and else says whom it runs as.
func trustedProcess(pid uint32) error {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, pid)
	if err != nil {
		return fmt.Errorf("cannot be inspected (%v)", err)
	}
	defer windows.CloseHandle(h)
	var tok windows.Token
	if err := windows.OpenProcessToken(h, windows.TOKEN_QUERY, &tok); err != nil {
		return fmt.Errorf("has a token we cannot read (%v)", err)
	}
	defer tok.Close()
	user, err := tok.GetTokenUser()
	if err != nil {
		return fmt.Errorf("has a token we cannot read (%v)", err)
	}
	me, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return fmt.Errorf("cannot be compared with us (%v)", err)
	}
	owner, _ := ownerOf(tok) // unread: not an administrator's
	return trustedUser(user.User.Sid, owner, me.User.Sid)
}

// trustedUser is trustedProcess's decision on a process's token: its user
// user, its default owner owner (nil when unknown), our user me.
func trustedUser(user, owner, me *windows.SID) error {
	if user.Equals(me) || user.IsWellKnown(windows.WinLocalSystemSid) {
		return nil
	}
	if owner != nil && owner.IsWellKnown(windows.WinBuiltinAdministratorsSid) {
		return nil
	}
	return fmt.Errorf("runs as %s, neither as us (%s), SYSTEM nor an elevated administrator", user, me)
}

// ownerOf reads the token's default owner (TokenOwner).
func ownerOf(tok windows.Token) (*windows.SID, error) {
	n := uint32(64)
	for {
		b := make([]byte, n)
		err := windows.GetTokenInformation(tok, windows.TokenOwner, &b[0], uint32(len(b)), &n)
		if err == nil {
			return (*tokenOwner)(unsafe.Pointer(&b[0])).Owner, nil
		}
		if err != windows.ERROR_INSUFFICIENT_BUFFER || n <= uint32(len(b)) {
			return nil, err
		}
	}
}
