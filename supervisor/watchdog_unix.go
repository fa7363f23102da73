//go:build unix

package supervisor

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
)

// watchdog is a helper process (`baton __watchdog`) that reads the process
// groups of the generations on its stdin and kills them when that pipe
// reaches EOF without a goodbye: the supervisor is gone.
type watchdog struct {
	mu  sync.Mutex
	w   *os.File
	cmd *exec.Cmd
}

func startWatchdog(activator []string) (*watchdog, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(activator[0], "__watchdog")
	cmd.Stdin = r
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("orphan watchdog: %w", err)
	}
	r.Close()
	go cmd.Wait()
	return &watchdog{w: w, cmd: cmd}, nil
}

func (d *watchdog) send(format string, a ...any) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.w, format+"\n", a...)
}

func (d *watchdog) add(pgid int)    { d.send("add %d", pgid) }
func (d *watchdog) remove(pgid int) { d.send("remove %d", pgid) }

// close says goodbye: every generation is gone, nothing to kill.
func (d *watchdog) close() {
	if d == nil {
		return
	}
	d.send("bye")
	d.w.Close()
}
