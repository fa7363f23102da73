package release

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// The Restart Manager (rstrtmgr.dll) is the documented way to ask Windows
// which processes hold a file. golang.org/x/sys/windows does not wrap it,
// so this is a small hand-written binding of the four calls we need.
var (
	modrstrtmgr             = windows.NewLazySystemDLL("rstrtmgr.dll")
	procRmStartSession      = modrstrtmgr.NewProc("RmStartSession")
	procRmRegisterResources = modrstrtmgr.NewProc("RmRegisterResources")
	procRmGetList           = modrstrtmgr.NewProc("RmGetList")
	procRmEndSession        = modrstrtmgr.NewProc("RmEndSession")
)

const (
	cchRmSessionKey   = 32 // CCH_RM_SESSION_KEY: hex digits of a GUID
	cchRmMaxAppName   = 255
	cchRmMaxSvcName   = 63
	errorMoreData     = 234
	rmAppTypeService  = 3
	rmAppTypeExplorer = 4
)

// rmUniqueProcess is RM_UNIQUE_PROCESS.
type rmUniqueProcess struct {
	PID       uint32
	StartTime windows.Filetime
}

// rmProcessInfo is RM_PROCESS_INFO.
type rmProcessInfo struct {
	Process          rmUniqueProcess
	AppName          [cchRmMaxAppName + 1]uint16
	ServiceShortName [cchRmMaxSvcName + 1]uint16
	ApplicationType  uint32
	AppStatus        uint32
	TSSessionID      uint32
	Restartable      int32
}

func rmErr(r uintptr) error {
	if r == 0 {
		return nil
	}
	return syscall.Errno(r)
}

// holdersKnowWriters: the Restart Manager does not tell writers.
const holdersKnowWriters = false

// Holders asks the Restart Manager which processes hold the file at path
// (running it, or with it open). The Restart Manager does not say whether
// a process writes to the file.
func Holders(path string) ([]Holder, error) {
	if err := modrstrtmgr.Load(); err != nil {
		return nil, fmt.Errorf("restart manager: %w (%v)", ErrUnsupported, err)
	}
	var session uint32
	var key [cchRmSessionKey + 1]uint16
	// p.Call directly (not through a helper): its //go:uintptrescapes
	// keeps the pointers converted in the call alive.
	if r, _, _ := procRmStartSession.Call(uintptr(unsafe.Pointer(&session)), 0, uintptr(unsafe.Pointer(&key[0]))); rmErr(r) != nil {
		err := rmErr(r)
		return nil, fmt.Errorf("RmStartSession: %w", err)
	}
	defer procRmEndSession.Call(uintptr(session))
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return nil, err
	}
	files := []*uint16{p}
	if r, _, _ := procRmRegisterResources.Call(uintptr(session), 1, uintptr(unsafe.Pointer(&files[0])), 0, 0, 0, 0); rmErr(r) != nil {
		err := rmErr(r)
		return nil, fmt.Errorf("RmRegisterResources: %w", err)
	}
	var infos []rmProcessInfo
	for try := 0; try < 5; try++ {
		var needed, n uint32
		var reasons uint32
		var first *rmProcessInfo
		n = uint32(len(infos))
		if n > 0 {
			first = &infos[0]
		}
		r, _, _ := procRmGetList.Call(uintptr(session), uintptr(unsafe.Pointer(&needed)), uintptr(unsafe.Pointer(&n)), uintptr(unsafe.Pointer(first)), uintptr(unsafe.Pointer(&reasons)))
		if r == errorMoreData {
			infos = make([]rmProcessInfo, needed+2)
			continue
		}
		if err := rmErr(r); err != nil {
			return nil, fmt.Errorf("RmGetList: %w", err)
		}
		infos = infos[:n]
		out := make([]Holder, 0, n)
		for _, in := range infos {
			name := windows.UTF16ToString(in.AppName[:])
			if in.ApplicationType == rmAppTypeService {
				if s := windows.UTF16ToString(in.ServiceShortName[:]); s != "" {
					name += " service " + s
				}
			}
			out = append(out, Holder{PID: int(in.Process.PID), Name: name, How: "is using it"})
		}
		return out, nil
	}
	return nil, fmt.Errorf("RmGetList: the list kept growing")
}

// heldPath: the Restart Manager is asked by name.
func heldPath(_ *os.File, path string) string { return path }
