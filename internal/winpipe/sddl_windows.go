package winpipe

import (
	"errors"
	"fmt"

	"golang.org/x/sys/windows"
)

// OwnerOnlySDDL returns a security descriptor, in SDDL form, for a pipe that
// only the current user, SYSTEM and Administrators may use: owned by the
// user running this process, with a protected DACL (nothing inherited)
// granting full access to that user, to SYSTEM and to the Administrators
// group, and to nobody else. Full access includes FILE_CREATE_PIPE_INSTANCE,
// which another process of the same user (the next generation of a service)
// needs to add its own instances; everyone else can neither connect nor
// squat on the name while we hold it.
func OwnerOnlySDDL() (string, error) {
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return "", fmt.Errorf("reading the user of this process: %w", err)
	}
	sid := tu.User.Sid.String()
	if sid == "" {
		return "", errors.New("reading the user of this process: cannot format its SID")
	}
	dacl := "(A;;FA;;;" + sid + ")"
	if sid != "S-1-5-18" { // a process running as LocalSystem needs one ACE only
		dacl += "(A;;FA;;;SY)"
	}
	dacl += "(A;;FA;;;BA)"
	return "O:" + sid + "D:P" + dacl, nil
}
