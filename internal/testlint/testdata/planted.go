// Planted violations for testlint's own test: each line that breaks a rule
// ends in a comment "want RULE"; nothing else may be reported.
package planted

import (
	"os"
	"syscall"
	"testing"
	tm "time"

	"golang.org/x/sys/unix"
)

func TestPlanted(t *testing.T) {
	tm.Sleep(tm.Second)   // want sleep
	<-tm.After(tm.Second) // want sleep
	select {
	case <-tm.After(tm.Second): // a timeout in a select: fine
	}
	sleep := tm.Sleep // want sleep
	sleep(0)
	syscall.Kill(0, syscall.SIGKILL) // want signal
	unix.Kill(-1, unix.SIGKILL)      // want signal
	p, _ := os.FindProcess(0)        // want signal
	p.Kill()
	t.Skip()           // want skip
	t.Skip("")         // want skip
	t.Skipf("  ")      // want skip
	t.SkipNow()        // want skip
	t.Skip("no /proc") // fine: says why
	var err error
	t.Skip(err) // fine: the error says why
	go func() {
		tm.Sleep(1) // want sleep
	}()
	if os.Geteuid() != 0 {
		t.Skip("needs another uid") // want root
	}
	if uid := os.Geteuid(); uid != 0 && err == nil {
		t.Skipf("uid %d", uid) // want root
	}
	t.Skip("needs Root privileges")        // want root
	t.Skip("uses the chroot of the build") // fine: root is not a word here
	if os.Geteuid() == 0 {
		t.Skip("as root, permissions are bypassed") // fine: skipped because root
	}
	t.Skip("running as root reads every fd table") // fine: not a want of root
	if os.Getuid() != 0 {
		t.Skip("not uid 0") // fine: not the effective uid
	}
}

// pollUntil is allowed to sleep and signal (the test names it).
func pollUntil(cond func() bool) {
	for !cond() {
		tm.Sleep(tm.Millisecond)
	}
	syscall.Kill(1, 0)
}
