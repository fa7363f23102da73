package handoff

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"time"

	"golang.org/x/sys/windows"
)

// A supervised child (SpawnConfig.Supervised) differs from a generation
// started by an upgrade in two ways: the supervisor stays its parent for
// good, so the child sits in the supervisor's one job object for its whole
// life (kill-on-close: when the supervisor dies, TerminateProcess
// included, the system closes the job's last handle and every generation
// dies with it); and its stdout and stderr stay pipes that the supervisor
// reads, so nothing is relayed by the child.

// maxLine is the longest line copied in one Write; longer ones are split.
const maxLine = 64 << 10

var supJob struct {
	once sync.Once
	job  *startupJob
	err  error
}

// supervisorJob returns this process's job object for supervised
// children, created on first use with KILL_ON_JOB_CLOSE. Its handle is
// never closed: only this process's end closes it.
func supervisorJob() (*startupJob, error) {
	supJob.once.Do(func() {
		h, err := windows.CreateJobObject(nil, nil)
		if err != nil {
			supJob.err = fmt.Errorf("CreateJobObject: %w", err)
			return
		}
		j := &startupJob{h: h}
		if err := j.setLimits(windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE); err != nil {
			j.close()
			supJob.err = fmt.Errorf("job object limits: %w", err)
			return
		}
		supJob.job = j
	})
	return supJob.job, supJob.err
}

// spawnSupervised is Spawn for a supervisor (see SpawnConfig.Supervised);
// ln is the handoff pipe at path, which Spawn closes.
func spawnSupervised(ctx context.Context, cfg SpawnConfig, ln net.Listener, path string) (*Child, error) {
	job, jobErr := supervisorJob()
	if jobErr != nil && cfg.Logger != nil {
		cfg.Logger.Warn("no job object for supervised generations; they may outlive this process", "err", jobErr)
	}
	stdout, stderr := cfg.Stdout, cfg.Stderr
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = realStderr
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd := exec.Command(cfg.Binary, cfg.Args...)
	cmd.Env = append(cleanEnv(cfg.Env), EnvChannel+"="+path)
	cmd.Stdout = outW
	cmd.Stderr = errW
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, errBinary(cfg.Binary, err)
	}
	// Placed in the job at once: what it starts from now on is in the job
	// too.
	if job != nil {
		if err := job.assign(cmd.Process.Pid); err != nil && cfg.Logger != nil {
			cfg.Logger.Warn("supervised generation not placed in the job object; it may outlive this process", "pid", cmd.Process.Pid, "err", err)
		}
	}
	tail := NewTail(stderrTailBytes)
	var copies sync.WaitGroup
	copies.Add(2)
	go func() {
		defer copies.Done()
		copyLines(outR, stdout)
		outR.Close()
	}()
	go func() {
		defer copies.Done()
		copyLines(errR, stderr, tail)
		errR.Close()
	}()
	copied := make(chan struct{})
	go func() { copies.Wait(); close(copied) }()

	c := newChild(cmd, tail)
	// The exit error must include what the child wrote last; the pipes end
	// when the child and everything it started have closed them, so the
	// wait is bounded.
	c.beforeExit = func() {
		select {
		case <-copied:
		case <-time.After(time.Second):
		}
	}
	c.watch(cmd)
	// No stderr relay: the pipes stay ours.
	return handOff(ctx, cfg, ln, c, func() []uint64 { return nil })
}

// copyLines copies r to each of ws, one whole line per Write (a line
// longer than maxLine in pieces, a last line without a newline as it is),
// until r ends. Errors of the writers are ignored: the child must never
// block on a pipe nobody reads.
func copyLines(r io.Reader, ws ...io.Writer) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			for _, w := range ws {
				_, _ = w.Write(line)
			}
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}
