//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/proctest"
	"github.com/baton-go/baton/internal/release"
	"github.com/baton-go/baton/test/faults/rig"
)

// Issue 14's problems 1-3 played against the service under load: another
// local user (nobody) or another process of the service's user.

const nobody = 65534

// asNobody runs a command as uid/gid 65534.
func asNobody(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %v as nobody: %w: %s", name, args, err, out)
	}
	return nil
}

// publicDir makes base (0755) holding pub, a directory like /tmp (world
// writable, sticky); the caller removes base.
func publicDir() (base, pub string) {
	base, err := os.MkdirTemp("", "bflt-pub")
	must(err, "mkdtemp")
	pub = filepath.Join(base, "pub")
	must(os.Chmod(base, 0o755), "chmod")
	must(os.Mkdir(pub, 0o777), "mkdir pub")
	must(os.Chmod(pub, 0o777|os.ModeSticky), "chmod pub")
	return base, pub
}

// cliAt runs root's baton CLI with BATON_RUNTIME_DIR=rt: its exit code,
// the code of its --json report (if any) and what it said.
func (c *C) cliAt(rt string, args ...string) (code int, jsonCode, said string) {
	cmd := exec.CommandContext(c.ctx, c.env.Bins["baton"], args...)
	cmd.Env = append(os.Environ(), contract.EnvRuntimeDir+"="+rt) // the last one counts
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		panic(err)
	}
	var jr struct {
		Code  string `json:"code"`
		Error string `json:"error"`
	}
	jsonDecode(out.Bytes(), &jr)
	return code, jr.Code, out.String() + errOut.String()
}

// startThroughLink starts a service of root's (the case's mode) with its
// runtime directory given as link: it must exit saying why, not serve.
func (c *C) startThroughLink(link, says string) (string, bool) {
	addr, err := rig.FreeAddr()
	must(err, "addr")
	name := c.name + "i"
	var cmd *exec.Cmd
	if c.mode == rig.Run {
		cmd = exec.Command(c.env.Bins["baton"], "run", "--name", name, "--listen", "tcp://"+addr, "--", c.env.Bins["hello-v1"], "-addr", addr)
	} else {
		cmd = exec.Command(c.env.Bins["hello-v1"], "-name", name, "-addr", addr)
	}
	cmd.Env = append(os.Environ(), contract.EnvRuntimeDir+"="+link)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	must(cmd.Start(), "start through the link")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		code := cmd.ProcessState.ExitCode()
		ok := err != nil && strings.Contains(out.String(), says)
		return fmt.Sprintf("refused: exit %d (%s)", code, saysOrTail(out.String(), says)), ok
	case <-time.After(20 * time.Second):
		cmd.Process.Kill() // our child, pid > 0; baton run's generations die with it
		<-done
		return "STARTED through the link (still running after 20 s)", false
	}
}

func saysOrTail(out, says string) string {
	if strings.Contains(out, says) {
		return "says: " + says
	}
	return short(strings.TrimSpace(out))
}

// symlinkedRuntimeDir: nobody plants pub/rt -> root's runtime directory.
// Root's service started through the link refuses to start; root's CLI
// refuses to talk through it, before and after nobody re-points it at a
// directory of theirs where their own hello answers under the service's
// name; nothing of root's is written there; root's service serves on.
func symlinkedRuntimeDir(c *C) Row {
	svc := c.start(rig.Opts{})
	l, pid0 := c.load(4, 2)
	sha0 := fileSHA(svc.Installed)
	base, pub := publicDir()
	defer os.RemoveAll(base)
	link := filepath.Join(pub, "rt")
	must(asNobody("ln", "-s", c.env.RuntimeDir(), link), "plant the link")
	says := link + " is a symbolic link owned by uid 65534"

	startedSaid, startRefused := c.startThroughLink(link, says)
	code1, jc1, out1 := c.cliAt(link, "status", "--name", c.name, "--json")

	// Nobody's own service of the same name, in nobody's directory.
	evil := filepath.Join(pub, "evil")
	must(asNobody("mkdir", "-m", "0700", evil), "mkdir")
	fakeBin := filepath.Join(evil, "hello")
	must(rig.CopyFile(c.env.Bins["hello-v1"], fakeBin), "copy")
	must(os.Chown(fakeBin, nobody, nobody), "chown")
	fakeSHA := fileSHA(fakeBin)
	addr, err := rig.FreeAddr()
	must(err, "addr")
	fakeLog, err := os.Create(filepath.Join(base, "fake.log"))
	must(err, "log")
	defer fakeLog.Close()
	fake := exec.Command(fakeBin, "-name", c.name, "-addr", addr)
	fake.Env = []string{contract.EnvRuntimeDir + "=" + evil, "PATH=/usr/bin:/bin"}
	fake.Dir = "/"
	fake.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	fake.Stdout, fake.Stderr = fakeLog, fakeLog
	must(fake.Start(), "start nobody's service")
	fakeDone := make(chan struct{})
	go func() { fake.Wait(); close(fakeDone) }()
	defer func() { fake.Process.Kill(); <-fakeDone }()
	if !waitFile(c.ctx, filepath.Join(evil, c.name+".sock"), fakeDone) {
		b, _ := os.ReadFile(fakeLog.Name())
		panic("nobody's service never made its socket: " + string(b))
	}
	must(asNobody("ln", "-sfn", evil, link), "re-point the link")
	code2, jc2, out2 := c.cliAt(link, "status", "--name", c.name, "--json")
	code3, jc3, out3 := c.cliAt(link, "upgrade", "--name", c.name, "--binary", c.env.Bins["hello-v2"], "--json")
	fakePID := strconv.Itoa(fake.Process.Pid)
	showedFake := strings.Contains(out1+out2+out3, `"pid": `+fakePID) || strings.Contains(out1+out2+out3, `"pid":`+fakePID)
	var ours []string
	ents, _ := os.ReadDir(evil)
	for _, e := range ents {
		if fi, err := os.Lstat(filepath.Join(evil, e.Name())); err == nil && fi.Sys().(*syscall.Stat_t).Uid != nobody && e.Name() != "hello" {
			ours = append(ours, e.Name())
		}
	}
	fakeSame := fileSHA(fakeBin) == fakeSHA
	serves := c.stillServes(l, pid0)
	r := l.Stop()
	pid1 := svc.Serving(c.ctx)
	same := fileSHA(svc.Installed) == sha0
	forbidden := func(code int, jc, out string) bool {
		return code == contract.ExitCode(contract.CodeForbidden) && (jc == "" || jc == contract.CodeForbidden) && strings.Contains(out, says)
	}
	return Row{
		Observed: strings.ReplaceAll(fmt.Sprintf("a service of root's started through the link: %s; root's status through it: exit %d %s; re-pointed at nobody's hello (pid %s): status exit %d %s, upgrade --binary exit %d %s, nobody's answers shown: %v; root's files written into nobody's dir: %d; installed binary unchanged: %v; pid %d serves (was %d)",
			startedSaid, code1, jc1, fakePID, code2, jc2, code3, jc3, showedFake, len(ours), same, pid1, pid0), base+"/", ""),
		Failed: rig.Failed(r),
		Pass: startRefused && forbidden(code1, jc1, out1) && forbidden(code2, jc2, out2) && forbidden(code3, jc3, out3) && !showedFake &&
			len(ours) == 0 && fakeSame && same && pid1 == pid0 && serves && r.TotalFailed() == 0,
	}
}

// waitFile waits until path exists (false if gone closes first or ctx ends).
func waitFile(ctx context.Context, path string, gone <-chan struct{}) bool {
	for {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		select {
		case <-gone:
			return false
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// storeAfter says whether the releases lock of installed is free and
// lists the private copies (.check-*) left in its store.
func storeAfter(installed string) (lock string, left []string) {
	st, err := release.Open(installed, release.StoreOptions{})
	if err != nil {
		return "store: " + err.Error(), nil
	}
	lock = "free"
	if err := st.TryLock(); err != nil {
		lock = "held (" + err.Error() + ")"
	} else {
		st.Unlock()
	}
	left, _ = filepath.Glob(filepath.Join(st.Dir(), ".check-*"))
	return lock, left
}

// badCandidate: the binary given to baton upgrade --binary, in a directory
// nobody may write to, is nobody's FIFO or nobody's link to /dev/zero.
func badCandidate(kind string) func(c *C) Row {
	return func(c *C) Row {
		svc := c.start(rig.Opts{})
		l, pid0 := c.load(4, 2)
		sha0 := fileSHA(svc.Installed)
		base, pub := publicDir()
		defer os.RemoveAll(base)
		cand := filepath.Join(pub, "app.new")
		if kind == "fifo" {
			must(asNobody("mkfifo", cand), "mkfifo")
		} else {
			must(asNobody("ln", "-s", "/dev/zero", cand), "ln")
		}
		uctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
		rep, err := svc.Upgrade(uctx, "--binary", cand)
		cancel()
		must(err, "baton upgrade")
		took := rep.Returned.Sub(rep.Triggered)
		lock, left := storeAfter(svc.Installed)
		serves := c.stillServes(l, pid0)
		r := l.Stop()
		pid1 := svc.Serving(c.ctx)
		same := fileSHA(svc.Installed) == sha0
		return Row{
			Observed: fmt.Sprintf("%s after %v (%s); releases lock %s; .check-* left: %d; installed binary unchanged: %v; pid %d serves (was %d)",
				repStr(rep), took.Round(10*time.Millisecond), short(strings.ReplaceAll(rep.Error, base+"/", "")), lock, len(left), same, pid1, pid0),
			Failed: rig.Failed(r),
			Pass: rep.ExitCode == 1 && rep.Code == contract.CodeNotExecutable && took < 10*time.Second && lock == "free" && len(left) == 0 &&
				same && pid1 == pid0 && serves && r.TotalFailed() == 0,
		}
	}
}

// candidateRace: while baton upgrade --binary runs, the candidate's name
// is swapped round and round between the real v2, a FIFO and a link to
// /dev/zero (as an attacker with write access to its directory would).
// Each upgrade installs v2 or is refused; none blocks, none copies
// /dev/zero; the lock is free and nothing is left afterwards.
func candidateRace(c *C) Row {
	svc := c.start(rig.Opts{Hello: []string{"-idle-grace", "200ms"}})
	l, _ := c.load(4, 2)
	sha1 := fileSHA(svc.Installed)
	base, pub := publicDir()
	defer os.RemoveAll(base)
	real := filepath.Join(pub, "v2")
	must(rig.CopyFile(c.env.Bins["hello-v2"], real), "copy")
	sha2 := fileSHA(real)
	cand := filepath.Join(pub, "app.new")
	must(os.Link(real, cand), "link")
	var swaps atomic.Int64
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tmp := cand + ".swap"
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond): // pace: the machine is shared
			}
			os.Remove(tmp)
			switch i % 3 {
			case 0:
				os.Link(real, tmp)
			case 1:
				syscall.Mkfifo(tmp, 0o644)
			case 2:
				os.Symlink("/dev/zero", tmp)
			}
			if os.Rename(tmp, cand) == nil {
				swaps.Add(1)
			}
		}
	}()
	const n = 12
	outcomes := map[string]int{}
	var slowest time.Duration
	okInstalls, wrongInstalls := 0, 0
	last := 0
	other := false
	for range n {
		uctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
		rep, err := svc.Upgrade(uctx, "--binary", cand)
		cancel()
		must(err, "baton upgrade")
		slowest = max(slowest, rep.Returned.Sub(rep.Triggered))
		outcomes[repStr(rep)]++
		switch {
		case rep.OK:
			last = rep.Result.PID
			if fileSHA(svc.Installed) == sha2 {
				okInstalls++
			} else {
				wrongInstalls++
			}
		case rep.ExitCode == 1 && rep.Code == contract.CodeNotExecutable:
		default:
			other = true
		}
	}
	close(stop)
	<-stopped
	lock, left := storeAfter(svc.Installed)
	now := fileSHA(svc.Installed)
	serves := last == 0 || c.stillServes(l, last)
	r := l.Stop()
	return Row{
		Observed: fmt.Sprintf("%d upgrades while the name was swapped %d times: %s; slowest %v; installs of the real v2: %d, of anything else: %d; installed binary is v1 or v2: %v; releases lock %s; .check-* left: %d",
			n, swaps.Load(), outcomeStr(outcomes), slowest.Round(10*time.Millisecond), okInstalls, wrongInstalls, now == sha1 || now == sha2, lock, len(left)),
		Failed: rig.Failed(r),
		Pass: !other && wrongInstalls == 0 && slowest < 10*time.Second && (now == sha1 || now == sha2) && lock == "free" && len(left) == 0 &&
			serves && r.TotalFailed() == 0,
	}
}

// foreignReady: a release that hangs in its start-up while this process
// sends READY=1 on its notify socket (baton run): not taken as ready.
func foreignReady(c *C) Row {
	svc := c.start(rig.Opts{Run: []string{"--ready-timeout", "2s"}})
	l, pid0 := c.load(4, 2)
	must(svc.Install(c.env.Bins["hello-hang"]), "install")
	notify := filepath.Join(c.env.RuntimeDir(), c.name+".gen2.notify")
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go proctest.ImpostorReady(notify, stop, sent)
	rep := c.upgrade()
	close(stop)
	n := <-sent
	serves := c.stillServes(l, pid0)
	r := l.Stop()
	pid1 := svc.Serving(c.ctx)
	logged := strings.Contains(svc.LogTail(1<<20), "notify message from another process ignored")
	return Row{
		Observed: fmt.Sprintf("%d READY=1 sent from another process; %s after %v; supervisor logged the ignored message: %v; pid %d serves (was %d)",
			n, repStr(rep), rep.Returned.Sub(rep.Triggered).Round(10*time.Millisecond), logged, pid1, pid0),
		Failed: rig.Failed(r),
		Pass:   n > 0 && rep.ExitCode == 1 && rep.Code == contract.CodeReadyTimeout && logged && pid1 == pid0 && serves && r.TotalFailed() == 0,
	}
}

// linkTakenFirst: this process connects to generation 2's link before
// generation 2 does (the release is a script that waits for it, then
// execs hello v2) and says hello with generation 2's pid (baton run).
func linkTakenFirst(c *C) Row {
	svc := c.start(rig.Opts{})
	l, pid0 := c.load(4, 2)
	linked := filepath.Join(svc.Dir, "impostor-linked")
	script := fmt.Sprintf("#!/bin/sh\ni=0\nwhile [ ! -e %q ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done\nexec %s \"$@\"\n", linked, c.env.Bins["hello-v2"])
	tmp := svc.Installed + ".tmp"
	must(os.WriteFile(tmp, []byte(script), 0o755), "script")
	must(os.Rename(tmp, svc.Installed), "install script")
	linkPath := filepath.Join(c.env.RuntimeDir(), c.name+".gen2.link")
	type result struct {
		pid int
		err error
	}
	impostor := make(chan result, 1)
	go func() {
		var pid int
		for pid == 0 {
			if pid = proctest.PIDWithEnv(contract.EnvLink + "=" + linkPath); pid != 0 {
				break
			}
			select {
			case <-c.ctx.Done():
				impostor <- result{0, fmt.Errorf("generation 2 (link %s) never seen", linkPath)}
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		conn, err := net.Dial("unix", linkPath)
		if err != nil {
			os.WriteFile(linked, nil, 0o600)
			impostor <- result{pid, err}
			return
		}
		b, _ := json.Marshal(contract.LinkHello{Version: contract.LinkVersion, PID: pid})
		frame := binary.BigEndian.AppendUint32(nil, uint32(len(b)))
		_, err = conn.Write(append(frame, b...))
		// Generation 2 may start now: we were on the link first.
		if ferr := os.WriteFile(linked, nil, 0o600); err == nil {
			err = ferr
		}
		conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		io.Copy(io.Discard, conn) // until the supervisor ends it
		conn.Close()
		impostor <- result{pid, err}
	}()
	before := l.Snapshot().PIDs[pid0].Responses
	rep := c.upgrade()
	imp := <-impostor
	pid1 := svc.Serving(c.ctx)
	serves := pid1 != 0 && c.stillServes(l, pid1)
	served, spid := servedCount(svc.Addr)
	r := l.Stop()
	logged := strings.Contains(svc.LogTail(1<<20), "link refused")
	impSaid := "connected first and said hello as pid " + strconv.Itoa(imp.pid)
	if imp.err != nil {
		impSaid = "failed: " + imp.err.Error()
	}
	return Row{
		Observed: fmt.Sprintf("impostor %s; %s; supervisor logged the refused link: %v; pid %d (%s) serves, counts %d served (pid %d had answered %d before: the state travelled: %v)",
			impSaid, repStr(rep), logged, pid1, r.PIDs[pid1].Version, served, pid0, before, served >= int(before)),
		Failed: rig.Failed(r),
		Pass: imp.err == nil && rep.OK && rep.Result.PID == imp.pid && logged && pid1 == imp.pid && spid == pid1 && serves &&
			r.PIDs[pid1].Version == "v2" && served >= int(before) && r.TotalFailed() == 0,
	}
}

// servedCount asks hello's /state how many requests it counts (its own
// and those handed over as state), and which pid answered.
func servedCount(addr string) (served, pid int) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return -1, 0
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	body, _ := io.ReadAll(conn)
	s := string(body)
	if i := strings.Index(s, "X-Pid: "); i >= 0 {
		fmt.Sscan(s[i+len("X-Pid: "):], &pid)
	}
	if i := strings.Index(s, "served "); i >= 0 {
		fmt.Sscan(s[i+len("served "):], &served)
	}
	return served, pid
}
