package metrics

import (
	"os"
	"strconv"
)

// image is the file process pid runs: /proc/PID/exe, which stays the
// running image when the installed binary was replaced since (a release
// installed but not upgraded to yet); binary when that cannot be read.
func image(pid int, binary string) string {
	p := "/proc/" + strconv.Itoa(pid) + "/exe"
	if f, err := os.Open(p); err == nil {
		f.Close()
		return p
	}
	return binary
}
