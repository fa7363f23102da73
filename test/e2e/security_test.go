//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/release"
	"github.com/baton-go/baton/internal/testenv"
)

// Issue 14, points 1 and 2, played by another local user (nobody) against
// root's services and root's `baton` CLI.

const nobody = 65534

// asNobody runs a command as uid/gid 65534 and fails the test if it fails.
func asNobody(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v as nobody: %v\n%s", name, args, err, out)
	}
}

// publicDir makes a directory like /tmp (world-writable, sticky) under a
// fresh directory everyone may enter, and returns it.
func publicDir(t *testing.T) string {
	t.Helper()
	base, err := os.MkdirTemp("", "bsec")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	pub := filepath.Join(base, "pub")
	for _, err := range []error{os.Chmod(base, 0o755), os.Mkdir(pub, 0o777), os.Chmod(pub, 0o777|os.ModeSticky)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return pub
}

// batonEnv runs the baton CLI with BATON_RUNTIME_DIR=runDir.
func batonEnv(ctx context.Context, t *testing.T, runDir string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bins["baton"], args...)
	cmd.Env = append(os.Environ(), "BATON_RUNTIME_DIR="+runDir) // the last one counts
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), o.String(), e.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, o.String(), e.String()
}

// TestSymlinkedRuntimeDirAttack: nobody plants pub/rt -> root's runtime
// directory. Root's service started with BATON_RUNTIME_DIR=pub/rt refuses
// to start; root's CLI given pub/rt refuses to talk through it, before and
// after nobody re-points the link at a directory of theirs that holds a
// fake service of the same name (a real library service run by nobody):
// `baton status` never shows nobody's service, and `baton upgrade
// --binary` writes nothing into nobody's directory. Before the fix the
// service started, status showed nobody's pid, and the upgrade staged
// root's binary beside the path nobody's service reported.
func TestSymlinkedRuntimeDirAttack(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root: the attacker runs as uid 65534, the victim as root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pub := publicDir(t)
	link := filepath.Join(pub, "rt")
	rootRun := ctl.Dir() // root's runtime directory (the suite's)
	if err := os.MkdirAll(rootRun, 0o700); err != nil {
		t.Fatal(err)
	}
	asNobody(t, "ln", "-s", rootRun, link)

	// 1. Root's service given the planted link does not start.
	dir := t.TempDir()
	app := filepath.Join(dir, "hello")
	installCopy(t, bins["hello"], app)
	svc := exec.Command(app, "-name", "secattack", "-addr", freeAddr(t, "tcp"))
	svc.Env = append(os.Environ(), "BATON_RUNTIME_DIR="+link)
	logf, err := os.Create(filepath.Join(dir, "svc.log"))
	if err != nil {
		t.Fatal(err)
	}
	svc.Stdout, svc.Stderr = logf, logf
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- svc.Wait() }()
	sock := filepath.Join(rootRun, "secattack.sock")
	for started := false; !started; {
		select {
		case err := <-exited:
			started = true
			out, _ := os.ReadFile(logf.Name())
			if err == nil || !strings.Contains(string(out), link+" is a symbolic link owned by uid 65534") {
				t.Errorf("root's service given a runtime directory through nobody's link: exit %v, output:\n%s", err, out)
			}
		case <-ctx.Done():
			t.Fatal("root's service neither started nor exited")
		case <-time.After(10 * time.Millisecond):
			if _, err := os.Stat(sock); err == nil {
				svc.Process.Kill()
				<-exited
				os.Remove(sock)
				t.Fatalf("root's service started through nobody's link %s (its socket is %s)", link, sock)
			}
		}
	}

	// 2. Root's real service, in root's directory.
	real, _ := startHello(t, "secattack", "-addr", freeAddr(t, "tcp"))
	realSt, err := real.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := batonEnv(ctx, t, link, "status", "--name", "secattack")
	if code != contract.ExitCode(contract.CodeForbidden) || !strings.Contains(errOut, link+" is a symbolic link owned by uid 65534") {
		t.Errorf("root's status through nobody's link: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// 3. Nobody re-points the link at a directory of theirs, where their
	// own service answers under the same name.
	evil := filepath.Join(pub, "evil")
	asNobody(t, "mkdir", "-m", "0700", evil)
	fakeBin := filepath.Join(evil, "hello")
	installCopy(t, bins["hello"], fakeBin)
	if err := os.Chown(fakeBin, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	fake := exec.Command(fakeBin, "-name", "secattack", "-addr", freeAddr(t, "tcp"))
	fake.Env = []string{"BATON_RUNTIME_DIR=" + evil, "GORACE=" + os.Getenv("GORACE"), "PATH=/usr/bin:/bin"}
	fake.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	fake.Stdout, fake.Stderr = logf, logf
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	fakeExited := make(chan error, 1)
	go func() { fakeExited <- fake.Wait() }()
	t.Cleanup(func() {
		fake.Process.Kill()
		<-fakeExited
	})
	fakeSock := filepath.Join(evil, "secattack.sock")
	for {
		if _, err := os.Stat(fakeSock); err == nil {
			break
		}
		select {
		case err := <-fakeExited:
			out, _ := os.ReadFile(logf.Name())
			t.Fatalf("nobody's service exited: %v\n%s", err, out)
		case <-ctx.Done():
			t.Fatal("nobody's service never made its socket")
		case <-time.After(10 * time.Millisecond):
		}
	}
	asNobody(t, "ln", "-sfn", evil, link)

	code, out, errOut = batonEnv(ctx, t, link, "status", "--name", "secattack", "--json")
	if code == 0 || strings.Contains(out, `"pid": `+strconv.Itoa(fake.Process.Pid)) || !strings.Contains(errOut+out, link+" is a symbolic link owned by uid 65534") {
		t.Errorf("root's status through the re-pointed link: exit %d, stdout %q, stderr %q (nobody's service is pid %d)", code, out, errOut, fake.Process.Pid)
	}
	v2 := filepath.Join(t.TempDir(), "hello")
	installCopy(t, bins["hello-v2"], v2)
	code, out, errOut = batonEnv(ctx, t, link, "upgrade", "--name", "secattack", "--binary", v2, "--json")
	var rep struct {
		OK   bool   `json:"ok"`
		Code string `json:"code"`
	}
	if json.Unmarshal([]byte(out), &rep) != nil || rep.OK || rep.Code != contract.CodeForbidden || code != contract.ExitCode(contract.CodeForbidden) {
		t.Errorf("root's upgrade --binary through the re-pointed link: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// Nobody's service makes files of its own there; anything of root's
	// (e.g. hello.releases) was written by root's upgrade.
	ents, err := os.ReadDir(evil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if fi, err := os.Lstat(filepath.Join(evil, e.Name())); err == nil && fi.Sys().(*syscall.Stat_t).Uid != nobody {
			t.Errorf("root's upgrade wrote %s into nobody's directory", e.Name())
		}
	}
	if got := fileSHA(t, fakeBin); got != fileSHA(t, bins["hello"]) {
		t.Errorf("nobody's binary was replaced")
	}
	if now, err := real.Status(ctx); err != nil || now.PID != realSt.PID {
		t.Errorf("root's service after the attack: %+v %v (was pid %d)", now, err, realSt.PID)
	}
}

// fakeService answers on the control endpoint name (in root's runtime
// directory, as root: every directory and peer check passes) with a status
// of its choosing, and says yes to every upgrade: a process that may
// answer there, lying about where its binary is.
func fakeService(t *testing.T, name string, st contract.Status) *atomic.Int32 {
	t.Helper()
	ln, err := ctl.Listen(name)
	if err != nil {
		t.Fatal(err)
	}
	upgrades := new(atomic.Int32) // counted by the server's goroutines, read by the test
	srv := ctl.Serve(ln, func(ctx context.Context, req ctl.Request) ctl.Response {
		switch req.Op {
		case ctl.OpStatus:
			return ctl.OKResponse(st)
		case ctl.OpUpgrade:
			upgrades.Add(1)
			return ctl.OKResponse(contract.UpgradeResult{PID: st.PID, Generation: 2})
		}
		return ctl.Response{Code: ctl.CodeBadRequest, Error: "no"}
	}, nil)
	t.Cleanup(func() {
		srv.Close()
		srv.Wait()
		ctl.Remove(name)
	})
	return upgrades
}

// TestInstalledPathNotFromTheServersWord: a service names as its binary a
// file it does not run (here: a program of root's that nobody asked to
// replace). `baton upgrade --binary` and `baton install` refuse it, suggest
// --path, and leave the file and its directory alone; with --path the
// operator's word is taken. Before the fix the upgrade replaced the file
// and exited 0 (the supervisor form) or staged into its directory (the
// library form).
func TestInstalledPathNotFromTheServersWord(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	installCopy(t, bins["hello"], victim)
	before := fileSHA(t, victim)
	v2 := filepath.Join(t.TempDir(), "hello")
	installCopy(t, bins["hello-v2"], v2)

	for _, form := range []struct {
		name string
		st   contract.Status
	}{
		{"seclib", contract.Status{Name: "seclib", PID: os.Getpid(), Phase: "serving", Binary: victim}},
		{"secsup", contract.Status{Name: "secsup", PID: os.Getpid(), Phase: "serving", Binary: victim,
			Supervisor: &contract.SupervisorInfo{PID: os.Getpid()}}},
	} {
		upgrades := fakeService(t, form.name, form.st)
		code, out, errOut := batonRun(ctx, t, "upgrade", "--name", form.name, "--binary", v2, "--json")
		var rep struct {
			OK    bool   `json:"ok"`
			Code  string `json:"code"`
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(out), &rep) != nil || rep.OK || rep.Code != contract.CodeForbidden || code != contract.ExitCode(contract.CodeForbidden) ||
			!strings.Contains(rep.Error, "--path "+victim) || !strings.Contains(rep.Error, "says its binary is "+victim) {
			t.Errorf("%s: upgrade --binary to a path the service does not run: exit %d, stdout %q, stderr %q", form.name, code, out, errOut)
		}
		code, out, errOut = batonRun(ctx, t, "install", "--name", form.name, v2)
		if code != contract.ExitCode(contract.CodeForbidden) || !strings.Contains(errOut, "--path "+victim) {
			t.Errorf("%s: install to a path the service does not run: exit %d, stdout %q, stderr %q", form.name, code, out, errOut)
		}
		if fileSHA(t, victim) != before {
			t.Fatalf("%s: %s was replaced on the service's word", form.name, victim)
		}
		if _, err := os.Stat(release.ReleasesDir(victim)); err == nil {
			t.Fatalf("%s: a releases directory was made beside %s on the service's word", form.name, victim)
		}
		if n := upgrades.Load(); n != 0 {
			t.Errorf("%s: %d upgrade requests were sent after the refusal", form.name, n)
		}
	}

	// The operator's word (--path) is taken: under the supervisor form the
	// file is installed and the (fake) upgrade asked for.
	code, out, errOut := batonRun(ctx, t, "upgrade", "--name", "secsup", "--binary", v2, "--path", victim)
	if code != 0 || fileSHA(t, victim) != fileSHA(t, v2) {
		t.Errorf("upgrade --binary --path %s: exit %d, stdout %q, stderr %q", victim, code, out, errOut)
	}
	// From now on our own record (the releases directory made by that
	// install) vouches for the path: no --path needed.
	code, out, errOut = batonRun(ctx, t, "releases", "--name", "secsup")
	if code != 0 || !strings.Contains(out, "releases of "+victim) {
		t.Errorf("releases of a recorded path: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestInstallFIFOReturnsAtOnce: a FIFO given as the binary to install is
// refused at once (not_executable, the message says FIFO), the releases
// lock is free afterwards and no private copy is left behind. (The race
// that swapped a checked file for a FIFO is tested in internal/release.)
func TestInstallFIFOReturnsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	installed := filepath.Join(dir, "hello")
	installCopy(t, bins["hello"], installed)
	fifo := filepath.Join(t.TempDir(), "new")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := batonRun(ctx, t, "install", "--path", installed, fifo, "--json")
	var rep struct {
		OK    bool   `json:"ok"`
		Code  string `json:"code"`
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(out), &rep) != nil || rep.OK || rep.Code != contract.CodeNotExecutable || !strings.Contains(rep.Error, "is a FIFO") || code != contract.ExitCode(contract.CodeNotExecutable) {
		t.Fatalf("install of a FIFO: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	st, err := release.Open(installed, release.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.TryLock(); err != nil {
		t.Fatalf("the releases lock after a refused FIFO: %v", err)
	}
	st.Unlock()
	if left, _ := filepath.Glob(filepath.Join(st.Dir(), ".check-*")); len(left) != 0 {
		t.Errorf("private copies left behind: %v", left)
	}
}
