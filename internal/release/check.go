package release

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"aead.dev/minisign"
	"github.com/baton-go/baton/internal/contract"
)

// Sentinel errors: every refusal wraps one of them. Each carries its wire
// code (contract.CodeOf, Code).
var (
	// ErrNotExecutable: not an executable for this OS and CPU, or a
	// truncated or corrupt one.
	ErrNotExecutable = contract.NewError(contract.CodeNotExecutable, "not an executable for this system")
	// ErrModule: the Go build info is unreadable or names another main
	// module, OS or CPU than the installed binary (see CheckOptions.Force).
	ErrModule = contract.NewError(contract.CodeModule, "wrong Go module")
	// ErrChecksum: the sha256 does not match the expected one.
	ErrChecksum = contract.NewError(contract.CodeChecksum, "checksum mismatch")
	// ErrSignature: the minisign signature is missing or does not verify.
	ErrSignature = contract.NewError(contract.CodeSignature, "signature does not verify")
	// ErrSmokeRun: the smoke run did not exit 0 within its timeout.
	ErrSmokeRun = contract.NewError(contract.CodeSmoke, "smoke run failed")
	// ErrUnsafeDir: a directory a binary is run from is writable by other
	// users (a binary or a DLL could be planted there).
	ErrUnsafeDir = contract.NewError(contract.CodeUnsafeDir, "directory writable by other users")
	// ErrDiskSpace: not enough free space for the copies.
	ErrDiskSpace = contract.NewError(contract.CodeDiskSpace, "not enough free disk space")
	// ErrBusy: the file is in use (being written, or locked by a running
	// process), or another baton holds the releases lock.
	ErrBusy = contract.NewError(contract.CodeBusy, "file busy")
	// ErrUnsupported: not available on this platform.
	ErrUnsupported = errors.New("not supported on this platform")
)

// Code returns a short machine-readable code for err ("not_executable",
// "module", "checksum", "signature", "smoke", "unsafe_dir", "disk_space",
// "busy"), or "" when err wraps none of the refusal sentinels. The codes
// are carried by the sentinels themselves (contract.NewError), so
// contract.CodeOf gives the same answer.
func Code(err error) string {
	for _, s := range []error{ErrBusy, ErrNotExecutable, ErrModule, ErrChecksum, ErrSignature, ErrSmokeRun, ErrUnsafeDir, ErrDiskSpace} {
		if errors.Is(err, s) {
			return contract.CodeOf(s)
		}
	}
	return ""
}

// CheckOptions configures Check. Only the file and format checks are
// always on; the others run when configured.
type CheckOptions struct {
	// Installed is the installed binary's path: its build info is the
	// reference for the module check, its directory and releases
	// directory are checked for safety and free space. Optional.
	Installed string
	// GOOS and GOARCH of the target; default: this process's.
	GOOS, GOARCH string
	// Force accepts a Go binary of another main module than the installed one.
	Force bool
	// SHA256 is the expected sha256 in hex.
	SHA256 string
	// ChecksumsFile is a `sha256sum` output holding the candidate's base name.
	ChecksumsFile string
	// PublicKeyFile is a minisign public key; when set, the candidate must
	// carry a valid detached signature.
	PublicKeyFile string
	// SignatureFile is the minisign signature; default: candidate + ".minisig".
	SignatureFile string
	// Smoke is a command template run after every other check passed,
	// e.g. "{bin} --version"; {bin} is replaced by the path of the private
	// copy that every check reads (same base name as the candidate).
	// Fields are split on white space (no shell). It must exit 0.
	Smoke string
	// SmokeTimeout bounds the smoke run (default 10s); its whole process
	// group is killed when it hangs.
	SmokeTimeout time.Duration
	// Staged says the candidate is already in the releases directory
	// (only the installed copy needs free space).
	Staged bool
	// WorkDir is where the checks' private copy of the candidate is made
	// (default: the releases directory of Installed when there is one,
	// which is on an executable file system, else the system's temp dir).
	WorkDir string
}

// Status of one check.
type Status string

// The outcomes of a check.
const (
	StatusOK      Status = "ok"
	StatusSkipped Status = "skipped"
	StatusFailed  Status = "failed"
)

// CheckResult is the outcome of one check.
type CheckResult struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail,omitempty"`
	Err    error  `json:"-"`
}

// Report lists every check run on a candidate and what was learnt.
type Report struct {
	Binary    string        `json:"binary"`
	SHA256    string        `json:"sha256,omitempty"`
	Size      int64         `json:"size"`
	Format    string        `json:"format,omitempty"` // e.g. "ELF x86-64"
	GoVersion string        `json:"go_version,omitempty"`
	Module    string        `json:"module,omitempty"`
	Version   string        `json:"version,omitempty"` // main module version
	Checks    []CheckResult `json:"checks"`
}

// OK reports whether no check failed.
func (r *Report) OK() bool { return r.Err() == nil }

// Err joins the errors of the failed checks (nil when none failed).
func (r *Report) Err() error {
	var errs []error
	for _, c := range r.Checks {
		if c.Status == StatusFailed {
			errs = append(errs, c.Err)
		}
	}
	return errors.Join(errs...)
}

// FirstErr is the error of the first failed check, or nil.
func (r *Report) FirstErr() error {
	for _, c := range r.Checks {
		if c.Status == StatusFailed {
			return c.Err
		}
	}
	return nil
}

// String prints one line per check.
func (r *Report) String() string {
	var b strings.Builder
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "  %-10s %-7s %s\n", c.Name, c.Status, c.Detail)
	}
	return b.String()
}

func (r *Report) add(name string, st Status, err error, detail string, args ...any) {
	if len(args) > 0 {
		detail = fmt.Sprintf(detail, args...)
	}
	if err != nil && detail == "" {
		detail = err.Error()
	}
	r.Checks = append(r.Checks, CheckResult{Name: name, Status: st, Detail: detail, Err: err})
}

func (r *Report) failed() bool { return r.FirstErr() != nil }

// Check runs every pre-flight check on candidate and changes nothing. The
// error is the joined error of the failed checks (also r.Err()); the
// report is returned in any case but a missing candidate.
func Check(ctx context.Context, candidate string, o CheckOptions) (*Report, error) {
	return check(ctx, candidate, o, nil)
}

// check is Check; when every check passed, passed is called with the
// private copy that the checks read (before it is removed), its sha256 and
// size, and its error is the result.
func check(ctx context.Context, candidate string, o CheckOptions, passed func(priv, sum string, size int64) error) (*Report, error) {
	if o.GOOS == "" {
		o.GOOS = runtime.GOOS
	}
	if o.GOARCH == "" {
		o.GOARCH = runtime.GOARCH
	}
	abs, err := filepath.Abs(candidate)
	if err != nil {
		return nil, err
	}
	// Opened once: every check below and the copy read this descriptor,
	// never the name again (see openCandidate).
	f, fi, err := openCandidate(abs)
	if err != nil {
		if errors.Is(err, ErrNotExecutable) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrNotExecutable, err)
	}
	defer f.Close()
	if testHookCandidateOpened != nil {
		testHookCandidateOpened(abs)
	}
	r := &Report{Binary: abs, Size: fi.Size()}

	// Writers first: a file still being written is neither hashed nor run.
	checkWriters(r, heldPath(f, abs), abs)
	// Every other check reads one private copy, made while hashing: a file
	// changed between two checks (by whoever can write to it) cannot pass
	// the signature check as one binary and the smoke run or the install
	// as another. Stage compares what it copies with this hash.
	if o.SignatureFile == "" {
		o.SignatureFile = abs + ".minisig"
	}
	// Free space first, by the file's size: the private copy below is the
	// copy that gets staged.
	checkSpace(r, o)
	if c := r.Checks[len(r.Checks)-1]; c.Name == "disk" && c.Status == StatusFailed {
		return r, r.Err() // no room for the copy the checks read
	}
	work := o.WorkDir
	if work == "" && o.Installed != "" && Managed(o.Installed) {
		if inst, err := resolveInstalled(o.Installed); err == nil {
			work = ReleasesDir(inst)
		}
	}
	priv, sum, size, cleanup, err := privateCopy(ctx, f, fi.Size(), abs, work)
	if err != nil && o.WorkDir == "" && work != "" && !errors.Is(err, ErrBusy) && ctx.Err() == nil {
		// A releases directory we may not write to (baton check by
		// another user than the owner): the temp dir will do for checks.
		priv, sum, size, cleanup, err = privateCopy(ctx, f, fi.Size(), abs, "")
	}
	if err != nil {
		switch {
		case errors.Is(err, syscall.ENOSPC):
			r.add("disk", StatusFailed, fmt.Errorf("%w: copying %s: %v", ErrDiskSpace, abs, err), "")
		case errors.Is(err, ErrBusy):
			r.add("sha256", StatusFailed, err, "")
		default:
			r.add("sha256", StatusFailed, fmt.Errorf("reading %s: %w", abs, err), "")
		}
		return r, r.Err()
	}
	defer cleanup()
	r.SHA256, r.Size = sum, size
	formatOK := checkFormat(r, priv, o.GOOS, o.GOARCH)
	if formatOK {
		checkBuildInfo(r, priv, o)
	} else {
		r.add("buildinfo", StatusSkipped, nil, "not an executable for %s/%s", o.GOOS, o.GOARCH)
	}
	checkSHA256(r, priv, o)
	checkSignature(r, priv, o)
	checkDirs(r, o)
	switch {
	case o.Smoke == "":
		r.add("smoke", StatusSkipped, nil, "no smoke command configured")
	case r.failed():
		r.add("smoke", StatusSkipped, nil, "not run: an earlier check failed (an unverified binary is never run)")
	default:
		checkSmoke(ctx, r, priv, o)
	}
	r.showPath(priv, abs)
	if err := r.Err(); err != nil || passed == nil {
		return r, err
	}
	return r, passed(priv, sum, r.Size)
}

// readBuildInfo is buildinfo.ReadFile with one read of the whole file (its
// many small reads are slow where system calls are, e.g. under Wine).
func readBuildInfo(path string) (*debug.BuildInfo, error) {
	r, _, closeFile, err := openForParsing(path)
	if err != nil {
		return nil, err
	}
	defer closeFile()
	return buildinfo.Read(r)
}

// showPath names the candidate in the report's messages, not the private
// copy the checks read.
func (r *Report) showPath(priv, shown string) {
	for i, c := range r.Checks {
		r.Checks[i].Detail = strings.ReplaceAll(c.Detail, priv, shown)
		if c.Err != nil && strings.Contains(c.Err.Error(), priv) {
			r.Checks[i].Err = shownError{c.Err, priv, shown}
		}
	}
}

// shownError is err with one path replaced in its message; errors.Is and
// errors.As still see err.
type shownError struct {
	err         error
	priv, shown string
}

func (e shownError) Error() string { return strings.ReplaceAll(e.err.Error(), e.priv, e.shown) }
func (e shownError) Unwrap() error { return e.err }

// checkWriters looks for processes that write to the open candidate:
// held is a name that reaches the open file itself (heldPath), path the
// name shown.
func checkWriters(r *Report, held, path string) {
	hs, err := Holders(held)
	if err != nil {
		r.add("writers", StatusSkipped, nil, "cannot tell who holds the file: %v", err)
		return
	}
	var w []Holder
	for _, h := range hs {
		if h.Write && h.PID != os.Getpid() {
			w = append(w, h)
		}
	}
	if !holdersKnowWriters {
		if len(hs) == 0 {
			r.add("writers", StatusOK, nil, "no process uses it")
		} else {
			r.add("writers", StatusSkipped, nil, "in use by %s (whether for writing is not known here)", describeHolders(hs))
		}
		return
	}
	if len(w) > 0 {
		r.add("writers", StatusFailed, fmt.Errorf("%w: %s is still being written: %s", ErrBusy, path, describeHolders(w)), "")
		return
	}
	r.add("writers", StatusOK, nil, "no process has it open for writing")
}

func checkBuildInfo(r *Report, path string, o CheckOptions) {
	bi, err := readBuildInfo(path)
	if err != nil {
		// Not a Go binary (or Go build info stripped): nothing to compare,
		// unless the installed binary is a Go program.
		if o.Installed != "" {
			if ibi, ierr := readBuildInfo(o.Installed); ierr == nil && !o.Force {
				r.add("buildinfo", StatusFailed, fmt.Errorf("%w: the installed binary is a Go program of module %s, %s is not a Go binary (%v); use --force to install it anyway", ErrModule, ibi.Path, path, err), "")
				return
			}
		}
		r.add("buildinfo", StatusSkipped, nil, "not a Go binary: %v", err)
		return
	}
	r.GoVersion, r.Module, r.Version = bi.GoVersion, bi.Main.Path, bi.Main.Version
	if r.Module == "" {
		r.Module = bi.Path
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if g := settings["GOOS"]; g != "" && g != o.GOOS {
		r.add("buildinfo", StatusFailed, fmt.Errorf("%w: built for GOOS=%s, this system is %s", ErrModule, g, o.GOOS), "")
		return
	}
	if g := settings["GOARCH"]; g != "" && g != o.GOARCH {
		r.add("buildinfo", StatusFailed, fmt.Errorf("%w: built for GOARCH=%s, this system is %s", ErrModule, g, o.GOARCH), "")
		return
	}
	detail := fmt.Sprintf("%s, module %s %s", bi.GoVersion, r.Module, r.Version)
	if o.Installed != "" {
		ibi, err := readBuildInfo(o.Installed)
		switch {
		case err != nil:
			detail += " (the installed binary has no Go build info to compare with)"
		case ibi.Main.Path != bi.Main.Path:
			if !o.Force {
				r.add("buildinfo", StatusFailed, fmt.Errorf("%w: %s is %s (module %s), the installed binary is %s (module %s); use --force to replace one program by another",
					ErrModule, path, bi.Path, bi.Main.Path, ibi.Path, ibi.Main.Path), "")
				return
			}
			detail += fmt.Sprintf(" (forced: the installed binary is %s)", ibi.Path)
		case ibi.Path != bi.Path:
			// Same module, another main package: allowed (a module may
			// build several commands), but said.
			detail += fmt.Sprintf(" (note: program %s, the installed binary is %s)", bi.Path, ibi.Path)
		default:
			detail += " (same program as installed)"
		}
	}
	r.add("buildinfo", StatusOK, nil, "%s", detail)
}

func checkSHA256(r *Report, path string, o CheckOptions) {
	if o.SHA256 == "" && o.ChecksumsFile == "" {
		r.add("checksum", StatusSkipped, nil, "no --sha256 or --checksums given")
		return
	}
	if r.SHA256 == "" {
		r.add("checksum", StatusFailed, fmt.Errorf("%w: the file could not be read", ErrChecksum), "")
		return
	}
	want, from := strings.ToLower(strings.TrimSpace(o.SHA256)), "--sha256"
	if want == "" {
		var err error
		if want, err = lookupChecksum(o.ChecksumsFile, filepath.Base(path)); err != nil {
			r.add("checksum", StatusFailed, fmt.Errorf("%w: %v", ErrChecksum, err), "")
			return
		}
		from = o.ChecksumsFile
	}
	if _, err := hex.DecodeString(want); err != nil || len(want) != 64 {
		r.add("checksum", StatusFailed, fmt.Errorf("%w: %q from %s is not a sha256 in hex", ErrChecksum, want, from), "")
		return
	}
	if want != r.SHA256 {
		r.add("checksum", StatusFailed, fmt.Errorf("%w: %s has sha256 %s, %s expects %s", ErrChecksum, path, r.SHA256, from, want), "")
		return
	}
	r.add("checksum", StatusOK, nil, "sha256 matches %s", from)
}

// lookupChecksum finds name in a `sha256sum` output ("HEX  name" or
// "HEX *name" per line).
func lookupChecksum(file, name string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sum, rest, ok := strings.Cut(line, " ")
		if !ok {
			return "", fmt.Errorf("%s:%d: not a sha256sum line", file, n)
		}
		entry := strings.TrimPrefix(strings.TrimLeft(rest, " "), "*")
		if entry == name || filepath.Base(entry) == name {
			return strings.ToLower(sum), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s has no line for %s", file, name)
}

func checkSignature(r *Report, path string, o CheckOptions) {
	if o.PublicKeyFile == "" {
		r.add("signature", StatusSkipped, nil, "no public key configured")
		return
	}
	sigFile := o.SignatureFile
	if sigFile == "" {
		sigFile = path + ".minisig"
	}
	err := verifySignature(path, sigFile, o.PublicKeyFile)
	if err != nil {
		r.add("signature", StatusFailed, fmt.Errorf("%w: %s: %v", ErrSignature, path, err), "")
		return
	}
	r.add("signature", StatusOK, nil, "minisign signature %s verifies with %s", sigFile, o.PublicKeyFile)
}

// verifySignature checks a minisign detached signature (prehashed, the
// default of minisign ≥ 0.8, or legacy) with aead.dev/minisign.
func verifySignature(path, sigFile, keyFile string) error {
	key, err := minisign.PublicKeyFromFile(keyFile)
	if err != nil {
		return fmt.Errorf("public key %s: %v", keyFile, err)
	}
	raw, err := os.ReadFile(sigFile)
	if err != nil {
		return fmt.Errorf("signature: %v", err)
	}
	var sig minisign.Signature
	if err := sig.UnmarshalText(raw); err != nil {
		return fmt.Errorf("signature %s: %v", sigFile, err)
	}
	if sig.KeyID != key.ID() {
		return fmt.Errorf("signed with key %X, the configured key %s is %X", sig.KeyID, keyFile, key.ID())
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var ok bool
	if sig.Algorithm == minisign.HashEdDSA {
		rd := minisign.NewReader(f)
		if _, err := io.Copy(io.Discard, rd); err != nil {
			return err
		}
		ok = rd.Verify(key, raw)
	} else {
		msg, err := io.ReadAll(f)
		if err != nil {
			return err
		}
		ok = minisign.Verify(key, msg, raw)
	}
	if !ok {
		return fmt.Errorf("the signature %s does not match the file (altered, or signed by someone else)", sigFile)
	}
	return nil
}

func checkDirs(r *Report, o CheckOptions) {
	if o.Installed == "" {
		r.add("directory", StatusSkipped, nil, "no installed path")
		return
	}
	dirs := []string{filepath.Dir(o.Installed)}
	if fi, err := os.Stat(ReleasesDir(o.Installed)); err == nil && fi.IsDir() {
		dirs = append(dirs, ReleasesDir(o.Installed))
	}
	for _, d := range dirs {
		if err := dirSafe(d); err != nil {
			r.add("directory", StatusFailed, fmt.Errorf("%w: %v", ErrUnsafeDir, err), "")
			return
		}
	}
	r.add("directory", StatusOK, nil, "%s not writable by other users", strings.Join(dirs, ", "))
}

func checkSpace(r *Report, o CheckOptions) {
	if o.Installed == "" {
		r.add("disk", StatusSkipped, nil, "no installed path")
		return
	}
	// One copy into the releases directory (unless staged already) and
	// one temporary copy beside the installed path; same file system in
	// the usual layout. 1 MiB of slack for the state and metadata.
	need := r.Size + 1<<20
	if !o.Staged {
		need += r.Size
	}
	// The first install also keeps the binary installed now as a release
	// (so that a rollback has something to go back to).
	adoptNote := ""
	if inst, err := resolveInstalled(o.Installed); err == nil && !hasCurrentRelease(inst) {
		if fi, err := os.Stat(inst); err == nil {
			need += fi.Size()
			adoptNote = ", the binary installed now kept as a release included"
		}
	}
	dir := filepath.Dir(o.Installed)
	free, err := freeSpace(dir)
	if err != nil {
		if errors.Is(err, ErrUnsupported) {
			r.add("disk", StatusSkipped, nil, "%v", err)
			return
		}
		r.add("disk", StatusFailed, fmt.Errorf("%w: %s: %v", ErrDiskSpace, dir, err), "")
		return
	}
	if free < uint64(need) {
		r.add("disk", StatusFailed, fmt.Errorf("%w: %s has %s free, the copies need %s%s", ErrDiskSpace, dir, human(free), human(uint64(need)), adoptNote), "")
		return
	}
	r.add("disk", StatusOK, nil, "%s free in %s, %s needed%s", human(free), dir, human(uint64(need)), adoptNote)
}

func human(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// fileSHA256 hashes a file.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// FileSHA256 returns the sha256 of a file in hex.
func FileSHA256(path string) (string, error) { return fileSHA256(path) }

// tail keeps the last n bytes written to it.
type tail struct {
	n   int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.n {
		t.buf = t.buf[len(t.buf)-t.n:]
	}
	return len(p), nil
}

func (t *tail) String() string { return string(bytes.TrimSpace(t.buf)) }
