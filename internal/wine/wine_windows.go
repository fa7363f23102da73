package wine

import (
	"unsafe"

	"golang.org/x/sys/windows"
)

// Version returns Wine's version and true when running under Wine (its
// ntdll.dll exports wine_get_version; Windows' does not).
func Version() (string, bool) {
	p := windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version")
	if p.Find() != nil {
		return "", false
	}
	r, _, _ := p.Call()
	if r == 0 {
		return "unknown", true
	}
	// r points to a static string inside ntdll, not to Go memory.
	return windows.BytePtrToString(*(**byte)(unsafe.Pointer(&r))), true
}
