package ctl

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/windows"
)

// TestTrustedUserRefusesOtherSIDs: the client's decision on the process
// serving a pipe. A server running under another SID, well-known or a
// local account's, is refused with the SID named; our own user (a copy of
// our SID, not the same pointer), SYSTEM, and an elevated administrator
// (default owner Administrators) are admitted.
//
// The decision is tested on SIDs, not on a pipe served by another user's
// process: under Wine every process runs as the one user (services.exe,
// rpcss.exe and all: S-1-5-21-0-0-0-1000), LogonUserW hands back a handle
// that is no token, and neither ImpersonateAnonymousToken nor
// NtCreateToken exist, so no process of another SID can be had. The
// pipe's own check (GetNamedPipeServerProcessId, then trustedProcess on
// that pid) is TestServerIdentifiedAndCorroborated's; the refusal end to
// end needs real Windows and a second account.
func TestTrustedUserRefusesOtherSIDs(t *testing.T) {
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		t.Fatal(err)
	}
	me := tu.User.Sid
	mine, err := me.Copy()
	if err != nil {
		t.Fatal(err)
	}
	known := func(w windows.WELL_KNOWN_SID_TYPE) *windows.SID {
		t.Helper()
		sid, err := windows.CreateWellKnownSid(w)
		if err != nil {
			t.Fatalf("CreateWellKnownSid(%d): %v", w, err)
		}
		return sid
	}
	// Another local account of the same machine: our SID with the last
	// sub-authority (the RID) changed.
	s := me.String()
	i := strings.LastIndexByte(s, '-')
	other, err := windows.StringToSid(s[:i] + "-4242")
	if err != nil || other.Equals(me) {
		t.Fatalf("another account's SID from %s: %v", s, err)
	}
	system := known(windows.WinLocalSystemSid)
	admins := known(windows.WinBuiltinAdministratorsSid)
	if me.Equals(system) {
		t.Fatal("running as SYSTEM: every process would be admitted, the refusals cannot be seen")
	}

	for _, c := range []struct {
		what        string
		user, owner *windows.SID
	}{
		{"another account", other, other},
		{"another account, owner unknown", other, nil},
		{"LocalService", known(windows.WinLocalServiceSid), nil},
		{"NetworkService", known(windows.WinNetworkServiceSid), nil},
		{"anonymous", known(windows.WinAnonymousSid), nil},
		{"another account owning by our SID", other, mine}, // the owner is no proof of the user
	} {
		err := trustedUser(c.user, c.owner, me)
		if err == nil {
			t.Errorf("%s (%s): admitted, want refused", c.what, c.user)
			continue
		}
		if !strings.Contains(err.Error(), "runs as "+c.user.String()) {
			t.Errorf("%s: %q does not name the SID %s", c.what, err, c.user)
		}
	}
	for _, c := range []struct {
		what        string
		user, owner *windows.SID
	}{
		{"our user", mine, mine},
		{"our user, owner unknown", mine, nil},
		{"SYSTEM", system, nil},
		{"an elevated administrator", other, admins},
	} {
		if err := trustedUser(c.user, c.owner, me); err != nil {
			t.Errorf("%s (%s): %v, want admitted", c.what, c.user, err)
		}
	}
	// And the real thing for this process: its token says our user.
	if err := trustedProcess(uint32(os.Getpid())); err != nil {
		t.Errorf("trustedProcess(our pid): %v", err)
	}
}
