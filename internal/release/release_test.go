package release

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
)

// Binaries built once for the package (TestMain).
var bins = map[string]string{}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "release-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	switch os.Getenv("RELEASE_TEST_CHILD") {
	case "sleep": // a process that runs (a copy of) this test binary
		time.Sleep(2 * time.Minute)
		os.Exit(0)
	case "hang": // a smoke run that starts a child and hangs
		exe, _ := os.Executable()
		child := exec.Command(exe)
		child.Env = append(os.Environ(), "RELEASE_TEST_CHILD=sleep")
		if err := child.Start(); err != nil {
			os.Exit(9)
		}
		os.WriteFile(os.Getenv("RELEASE_TEST_PIDFILE"), []byte(fmt.Sprint(child.Process.Pid)), 0o600)
		time.Sleep(2 * time.Minute)
		os.Exit(0)
	}
	code := 1
	if _, err := exec.LookPath("go"); err != nil {
		// Under Wine: no toolchain; the tests on copies of this test
		// binary run, those needing built programs skip.
		fmt.Println("release tests: no go command here; tests needing built binaries are skipped")
		code = m.Run()
	} else if err := buildAll(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func otherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

func buildAll(dir string) error {
	exe := ""
	if runtime.GOOS == "windows" {
		exe = ".exe"
	}
	build := func(name, pkgDir string, env []string, args ...string) error {
		out := filepath.Join(dir, name+exe)
		if strings.Contains(strings.Join(env, " "), "GOOS=windows") {
			out = filepath.Join(dir, name+".exe")
		}
		cmd := exec.Command("go", append(append([]string{"build", "-o", out}, args...), ".")...)
		cmd.Dir = pkgDir
		cmd.Env = append(os.Environ(), env...)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", name, err, b)
		}
		bins[name] = out
		return nil
	}
	app, err := filepath.Abs("testdata/app")
	if err != nil {
		return err
	}
	if err := build("app", app, nil, "-ldflags", "-X main.version=v1"); err != nil {
		return err
	}
	if err := build("app2", app, nil, "-ldflags", "-X main.version=v2"); err != nil {
		return err
	}
	if err := build("app-arch", app, []string{"GOARCH=" + otherArch(), "CGO_ENABLED=0"}); err != nil {
		return err
	}
	if runtime.GOOS != "windows" {
		if err := build("app-pe", app, []string{"GOOS=windows", "CGO_ENABLED=0"}); err != nil {
			return err
		}
	} else if err := build("app-pe", app, []string{"GOOS=linux", "CGO_ENABLED=0"}); err != nil {
		return err // the foreign format on Windows is an ELF
	}
	// A program of another main module.
	other := filepath.Join(dir, "othermod")
	if err := os.MkdirAll(other, 0o755); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/othermod\n\ngo 1.25\n"), 0o644)
	os.WriteFile(filepath.Join(other, "main.go"), []byte("package main\n\nfunc main() { println(\"other\") }\n"), 0o644)
	if err := build("other", other, []string{"GOFLAGS=-mod=mod", "GOWORK=off"}); err != nil {
		return err
	}
	// Truncated copies: cut in the middle, and just the tail (the ELF
	// section headers) cut off.
	b, err := os.ReadFile(bins["app"])
	if err != nil {
		return err
	}
	for name, n := range map[string]int{"trunc-half": len(b) / 2, "trunc-tail": len(b) - 512} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b[:n], 0o755); err != nil {
			return err
		}
		bins[name] = p
	}
	script := filepath.Join(dir, "script.sh")
	os.WriteFile(script, []byte("#!/bin/sh\nexit 0\n"), 0o755)
	bins["script"] = script
	return nil
}

// needBins skips a test that needs the programs built by TestMain.
func needBins(t *testing.T) {
	t.Helper()
	if len(bins) == 0 {
		// The Windows lane runs this binary under Wine, where there is no
		// go command: these tests run on the Unix lane (where go runs them).
		t.Skip("no go command to build the test programs (the Windows test binary under Wine): covered by the Unix lane")
	}
}

// copyTo copies a built binary to dir/name.
func copyTo(t *testing.T, src, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustFail(t *testing.T, rep *Report, err, sentinel error, check string, contains ...string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %v does not wrap %v\nreport:\n%v", err, sentinel, rep)
	}
	found := false
	for _, c := range rep.Checks {
		if c.Name == check {
			found = true
			if c.Status != StatusFailed || !errors.Is(c.Err, sentinel) {
				t.Fatalf("check %s: %s %v, want failed with %v", check, c.Status, c.Err, sentinel)
			}
		}
	}
	if !found {
		t.Fatalf("no %s check in the report:\n%v", check, rep)
	}
	for _, s := range contains {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

func status(rep *Report, check string) Status {
	for _, c := range rep.Checks {
		if c.Name == check {
			return c.Status
		}
	}
	return ""
}

func TestCheckGood(t *testing.T) {
	needBins(t)
	dir := t.TempDir()
	installed := copyTo(t, bins["app"], dir, "app")
	rep, err := Check(context.Background(), bins["app2"], CheckOptions{Installed: installed, Smoke: "{bin} --version"})
	if err != nil {
		t.Fatalf("good candidate refused: %v\n%v", err, rep)
	}
	if rep.Module == "" || rep.GoVersion == "" || len(rep.SHA256) != 64 {
		t.Errorf("build info or sha256 missing: %+v", rep)
	}
	for check, want := range map[string]Status{"format": StatusOK, "buildinfo": StatusOK, "smoke": StatusOK, "checksum": StatusSkipped,
		"signature": StatusSkipped, "directory": StatusOK, "disk": StatusOK} {
		if got := status(rep, check); got != want && !(check == "writers" && got == StatusSkipped) {
			t.Errorf("check %s: %s, want %s\n%v", check, got, want, rep)
		}
	}
}

func TestCheckFormat(t *testing.T) {
	needBins(t)
	ctx := context.Background()
	for _, tc := range []struct {
		bin  string
		want []string
	}{
		{"trunc-half", []string{"truncated ELF file", "the file has"}},
		{"trunc-tail", []string{"truncated ELF file", "the file has"}},
		{"app-pe", []string{"for another system"}},
		{"app-arch", []string{"another CPU than " + runtime.GOARCH}},
		{"script", []string{"script"}},
	} {
		t.Run(tc.bin, func(t *testing.T) {
			rep, err := Check(ctx, bins[tc.bin], CheckOptions{Smoke: "{bin} --version"})
			mustFail(t, rep, err, ErrNotExecutable, "format", tc.want...)
			if st := status(rep, "smoke"); st != StatusSkipped {
				t.Errorf("smoke run %s for a refused binary", st)
			}
		})
	}
	// A complete file of the wrong size for its headers is refused, one
	// byte short is enough.
	b, _ := os.ReadFile(bins["app"])
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, b[:len(b)-1], 0o755)
	rep, err := Check(ctx, short, CheckOptions{})
	mustFail(t, rep, err, ErrNotExecutable, "format", "truncated", "the file has")
}

func TestCheckNonGo(t *testing.T) {
	needBins(t)
	if runtime.GOOS == "windows" {
		t.Skip("no /bin/true")
	}
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Skip(err)
	}
	rep, err := Check(context.Background(), truePath, CheckOptions{})
	if err != nil {
		t.Fatalf("a native non-Go executable refused: %v", err)
	}
	if st := status(rep, "buildinfo"); st != StatusSkipped {
		t.Fatalf("buildinfo check %s for a non-Go binary", st)
	}
	// Replacing a Go program by a non-Go one needs --force.
	installed := copyTo(t, bins["app"], t.TempDir(), "app")
	rep, err = Check(context.Background(), truePath, CheckOptions{Installed: installed})
	mustFail(t, rep, err, ErrModule, "buildinfo", "not a Go binary")
}

func TestCheckModule(t *testing.T) {
	needBins(t)
	installed := copyTo(t, bins["app"], t.TempDir(), "app")
	rep, err := Check(context.Background(), bins["other"], CheckOptions{Installed: installed})
	mustFail(t, rep, err, ErrModule, "buildinfo", "example.com/othermod", "--force")
	rep, err = Check(context.Background(), bins["other"], CheckOptions{Installed: installed, Force: true})
	if err != nil || !strings.Contains(rep.Checks[len(rep.Checks)-1].Detail+fmt.Sprint(rep.Checks), "forced") {
		t.Fatalf("forced: %v\n%v", err, rep)
	}
	// GOARCH from the build info, had the format check let it through.
	rep = &Report{}
	checkBuildInfo(rep, bins["app-arch"], CheckOptions{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH})
	mustFail(t, rep, rep.Err(), ErrModule, "buildinfo", "GOARCH="+otherArch())
}

func TestCheckChecksum(t *testing.T) {
	needBins(t)
	ctx := context.Background()
	sum, err := FileSHA256(bins["app"])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Check(ctx, bins["app"], CheckOptions{SHA256: strings.ToUpper(sum)}); err != nil {
		t.Fatalf("right sha256 refused: %v", err)
	}
	wrong := strings.Repeat("0", 64)
	rep, err := Check(ctx, bins["app"], CheckOptions{SHA256: wrong})
	mustFail(t, rep, err, ErrChecksum, "checksum", sum, wrong)
	rep, err = Check(ctx, bins["app"], CheckOptions{SHA256: "abc"})
	mustFail(t, rep, err, ErrChecksum, "checksum", "not a sha256")

	dir := t.TempDir()
	sums := filepath.Join(dir, "SHA256SUMS")
	os.WriteFile(sums, []byte(wrong+"  other\n"+sum+" *"+filepath.Base(bins["app"])+"\n"), 0o644)
	if rep, err := Check(ctx, bins["app"], CheckOptions{ChecksumsFile: sums}); err != nil || status(rep, "checksum") != StatusOK {
		t.Fatalf("checksums file: %v", err)
	}
	rep, err = Check(ctx, bins["app2"], CheckOptions{ChecksumsFile: sums})
	mustFail(t, rep, err, ErrChecksum, "checksum", "no line for app2")
	os.WriteFile(sums, []byte(wrong+"  app\n"), 0o644)
	rep, err = Check(ctx, bins["app"], CheckOptions{ChecksumsFile: sums})
	mustFail(t, rep, err, ErrChecksum, "checksum", "expects "+wrong)
}

func TestCheckSignature(t *testing.T) {
	needBins(t)
	ctx := context.Background()
	dir := t.TempDir()
	pub, priv, err := minisign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	pubText, _ := pub.MarshalText()
	pubFile := filepath.Join(dir, "key.pub")
	os.WriteFile(pubFile, pubText, 0o644)
	bin := copyTo(t, bins["app"], dir, "app")
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin+".minisig", minisign.Sign(priv, b), 0o644) // legacy (non-prehashed)
	if rep, err := Check(ctx, bin, CheckOptions{PublicKeyFile: pubFile}); err != nil || status(rep, "signature") != StatusOK {
		t.Fatalf("good legacy signature refused: %v", err)
	}
	rd := minisign.NewReader(bytes.NewReader(b))
	if _, err := io.Copy(io.Discard, rd); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin+".minisig", rd.Sign(priv), 0o644) // prehashed (minisign's default)
	if _, err := Check(ctx, bin, CheckOptions{PublicKeyFile: pubFile}); err != nil {
		t.Fatalf("good prehashed signature refused: %v", err)
	}
	// The same signature on another file.
	other := copyTo(t, bins["app2"], dir, "app2")
	sig, _ := os.ReadFile(bin + ".minisig")
	os.WriteFile(other+".minisig", sig, 0o644)
	rep, err := Check(ctx, other, CheckOptions{PublicKeyFile: pubFile})
	mustFail(t, rep, err, ErrSignature, "signature", "does not match")
	// Signed by another key.
	_, priv2, _ := minisign.GenerateKey(nil)
	os.WriteFile(bin+".sig2", minisign.Sign(priv2, b), 0o644)
	rep, err = Check(ctx, bin, CheckOptions{PublicKeyFile: pubFile, SignatureFile: bin + ".sig2"})
	mustFail(t, rep, err, ErrSignature, "signature", "signed with key")
	// No signature at all.
	rep, err = Check(ctx, other, CheckOptions{PublicKeyFile: pubFile, SignatureFile: filepath.Join(dir, "none.minisig")})
	mustFail(t, rep, err, ErrSignature, "signature", "none.minisig")
	if st := status(rep, "smoke"); st != StatusSkipped {
		t.Errorf("smoke %s", st)
	}
}

func TestCheckSmoke(t *testing.T) {
	needBins(t)
	ctx := context.Background()
	rep, err := Check(ctx, bins["app"], CheckOptions{Smoke: "{bin} --exit 1"})
	mustFail(t, rep, err, ErrSmokeRun, "smoke", "exit code 1", "missing DATABASE_URL")

	pidFile := filepath.Join(t.TempDir(), "child.pid")
	rep, err = Check(ctx, bins["app"], CheckOptions{Smoke: "{bin} --hang " + pidFile, SmokeTimeout: 1500e6})
	mustFail(t, rep, err, ErrSmokeRun, "smoke", "did not finish within 1.5s")
	if runtime.GOOS == "windows" {
		return
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the hanging smoke run never started its child: %v", err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	waitGone(t, pid)

	rep, err = Check(ctx, bins["app"], CheckOptions{Smoke: "/no/such/command {bin}"})
	mustFail(t, rep, err, ErrSmokeRun, "smoke", "could not start")
}

func TestUnsafeDir(t *testing.T) {
	needBins(t)
	if runtime.GOOS == "windows" {
		t.Skip("mode bits")
	}
	dir := filepath.Join(t.TempDir(), "bin")
	os.Mkdir(dir, 0o755)
	installed := copyTo(t, bins["app"], dir, "app")
	if _, err := Check(context.Background(), bins["app2"], CheckOptions{Installed: installed}); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	rep, err := Check(context.Background(), bins["app2"], CheckOptions{Installed: installed})
	mustFail(t, rep, err, ErrUnsafeDir, "directory", "writable by group and others", "chmod go-w")
	os.Chmod(dir, 0o755)
	os.Mkdir(ReleasesDir(installed), 0o770)
	os.Chmod(ReleasesDir(installed), 0o770)
	rep, err = Check(context.Background(), bins["app2"], CheckOptions{Installed: installed})
	mustFail(t, rep, err, ErrUnsafeDir, "directory", ".releases", "its group")
}

func TestCode(t *testing.T) {
	if Code(fmt.Errorf("x: %w", ErrLocked)) != "busy" || Code(errors.Join(errors.New("a"), ErrChecksum)) != "checksum" || Code(errors.New("x")) != "" {
		t.Fatal("Code")
	}
}

// What the checks saw is what gets staged: every check reads one private
// copy, a candidate changed during or after its checks (here by the smoke
// command itself) is refused by Stage, and the report names the candidate,
// not the private copy.
func TestCheckedIsStaged(t *testing.T) {
	needBins(t)
	if runtime.GOOS == "windows" {
		t.Skip("uses /bin/cp")
	}
	ctx := context.Background()
	cand := copyTo(t, bins["app"], t.TempDir(), "app")
	rep, err := Check(ctx, cand, CheckOptions{Smoke: "/bin/cp /dev/null " + cand})
	if err != nil {
		t.Fatalf("check: %v\n%s", err, rep)
	}
	for _, c := range rep.Checks {
		if strings.Contains(c.Detail, ".check-") {
			t.Errorf("check %s names the private copy: %s", c.Name, c.Detail)
		}
	}
	if fi, err := os.Stat(cand); err != nil || fi.Size() != 0 {
		t.Fatalf("the smoke command did not empty the candidate: %v", err)
	}
	installed := copyTo(t, bins["app"], t.TempDir(), "installed")
	st, err := Open(installed, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	defer st.Unlock()
	if _, err := st.Stage(cand, rep.SHA256); !errors.Is(err, ErrChecksum) {
		t.Fatalf("Stage of a candidate changed after its checks: %v, want ErrChecksum", err)
	}
}
