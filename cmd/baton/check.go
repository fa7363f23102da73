package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/ctl"
	"github.com/baton-go/baton/internal/release"
	"github.com/spf13/cobra"
)

// stageFlags are the flags of the commands that check and stage a binary
// (check, install, upgrade --binary).
type stageFlags struct {
	path         string // installed path when the service is not running
	sha256       string
	checksums    string
	pubkey       string
	signature    string
	smoke        string
	smokeTimeout time.Duration
	force        bool
	keep         int
}

func (f *stageFlags) add(c *cobra.Command, withKeep bool) {
	fl := c.Flags()
	fl.StringVar(&f.path, "path", "", "the installed binary's path (default: asked from the running service's status)")
	fl.StringVar(&f.sha256, "sha256", "", "refuse the binary unless its sha256 (hex) is this")
	fl.StringVar(&f.checksums, "checksums", "", "refuse the binary unless it matches its line in this sha256sum-format FILE")
	fl.StringVar(&f.pubkey, "pubkey", "", "minisign public key: refuse the binary unless its detached signature verifies")
	fl.StringVar(&f.signature, "signature", "", "minisign signature file (default: BINARY.minisig)")
	fl.StringVar(&f.smoke, "smoke", "", "smoke command run once every other check passed, e.g. \"{bin} --version\" ({bin}: the binary; no shell); must exit 0")
	fl.DurationVar(&f.smokeTimeout, "smoke-timeout", 10*time.Second, "the smoke command is killed (with its process group) after this long")
	fl.BoolVar(&f.force, "force", false, "accept a Go binary of another main module than the installed one")
	if withKeep {
		fl.IntVar(&f.keep, "keep", release.DefaultKeep, "keep this many releases (the installed and the previous one are always kept)")
	}
}

func (f *stageFlags) options(installed string) release.CheckOptions {
	return release.CheckOptions{
		Installed:     installed,
		Force:         f.force,
		SHA256:        f.sha256,
		ChecksumsFile: f.checksums,
		PublicKeyFile: f.pubkey,
		SignatureFile: f.signature,
		Smoke:         f.smoke,
		SmokeTimeout:  f.smokeTimeout,
	}
}

// serviceStatus asks the service for its status; peer is what the system
// says about who answered.
func serviceStatus(ctx context.Context, name string) (contract.Status, ctl.Peer, error) {
	var st contract.Status
	resp, peer, err := ctl.DoPeer(ctx, name, ctl.Request{Op: ctl.OpStatus})
	if err != nil {
		return st, peer, err
	}
	if !resp.OK {
		return st, peer, fmt.Errorf("status of %s: %s (%s)", name, resp.Error, resp.Code)
	}
	return st, peer, resp.Decode(&st)
}

// installedPath is --path, or the binary path the running service
// reports once corroborated (trustedBinary); symlinks resolved (the file
// they point to is replaced).
func installedPath(ctx context.Context, name, path string) (string, *contract.Status, error) {
	p, st, err := installedPathRaw(ctx, name, path)
	if err == nil {
		if real, rerr := filepath.EvalSymlinks(p); rerr == nil {
			p = real
		}
	}
	return p, st, err
}

func installedPathRaw(ctx context.Context, name, path string) (string, *contract.Status, error) {
	if path != "" {
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", nil, &exitError{code: contract.CodeUsage, err: err}
		}
		var st *contract.Status
		if name != "" {
			if s, _, err := serviceStatus(ctx, name); err == nil {
				st = &s
			}
		}
		return abs, st, nil
	}
	if name == "" {
		return "", nil, &exitError{code: contract.CodeUsage, err: errors.New("--name or --path is required")}
	}
	st, peer, err := serviceStatus(ctx, name)
	if err != nil {
		ee := transportError(err)
		ee.err = fmt.Errorf("%w (to learn where the binary is installed; give --path when the service is not running)", ee.err)
		return "", nil, ee
	}
	if st.Binary == "" {
		return "", nil, &exitError{code: contract.CodeInternal, err: fmt.Errorf("%s does not report its binary path; give --path", name)}
	}
	if err := trustedBinary(name, peer, st); err != nil {
		return "", nil, err
	}
	return st.Binary, &st, nil
}

// trustedBinary decides whether the binary path in a service's status is
// where the binary is installed. The status is the service's own word, and
// install and upgrade --binary write a file there: a process that may
// answer on the endpoint but should not choose what we overwrite (one that
// dropped to another user after it made the socket, or was taken over)
// could name any file. So the path is taken only when something the
// service cannot forge agrees:
//
//   - our own records: the releases directory beside the path, made by an
//     earlier install there, owned by us or root and writable by nobody
//     else (release.Recorded); or
//   - the system: the process serving the endpoint runs as us or root and
//     runs that path (a library service), or supervises a generation that
//     runs a copy of it (baton run) (ctl.Corroborate; Linux and Windows).
//
// Neither holds, e.g. on macOS for a binary never installed by baton, or a
// service that changed its user: refused, and --path is the way to say
// where the binary is.
func trustedBinary(name string, peer ctl.Peer, st contract.Status) error {
	recErr := release.Recorded(st.Binary)
	if recErr == nil {
		return nil
	}
	sysErr := ctl.Corroborate(name, peer, st, st.Binary)
	if sysErr == nil {
		return nil
	}
	return &exitError{code: contract.CodeOf(ctl.ErrUncorroborated), err: fmt.Errorf(
		"%w: %s says its binary is %s, but neither our records (%v) nor the system (%v) confirm it; if that is where the binary is installed, say so with --path %s",
		ctl.ErrUncorroborated, name, st.Binary, recErr, strings.TrimPrefix(sysErr.Error(), ctl.ErrUncorroborated.Error()+": "), st.Binary)}
}

// runningSHA256 is the sha256 of the binary the serving generation runs:
// from the supervisor's status, else (Linux) from /proc/PID/exe.
func runningSHA256(st *contract.Status) string {
	if st == nil {
		return ""
	}
	if sup := st.Supervisor; sup != nil {
		for _, g := range sup.Generations {
			if g.PID == st.PID {
				return g.SHA256
			}
		}
	}
	f, err := os.Open("/proc/" + strconv.Itoa(st.PID) + "/exe")
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

// refusal turns a failed check (or a store error) into an exit error: its
// code is the refusal's (busy for a file still being written or the
// releases lock, checksum, smoke, ...), internal for anything else.
func refusal(err error) *exitError {
	return &exitError{code: contract.CodeOf(err), err: err}
}

func printJSON(out io.Writer, v any) {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// checkReport is what `baton check --json` prints.
type checkReport struct {
	Name      string          `json:"name,omitempty"`
	Installed string          `json:"installed"`
	OK        bool            `json:"ok"`
	Code      string          `json:"code,omitempty"`
	Error     string          `json:"error,omitempty"`
	Report    *release.Report `json:"report,omitempty"`
}

func newCheckCmd() *cobra.Command {
	var f stageFlags
	var name, binary string
	var asJSON bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "check --name NAME [--binary FILE]",
		Short: "Run every pre-flight check on a new binary (or the installed one); change nothing",
		Long: `Run every check that baton install and baton upgrade --binary run before
they switch anything, print one line per check, and change nothing:

  writers    no process still has the file open for writing (a build or a
             copy still running); Linux names the process
  format     an executable for this OS and CPU (ELF, PE or Mach-O), complete
             (header tables, segments and sections inside the file)
  buildinfo  for a Go binary: Go version, main module, GOOS/GOARCH; another
             main module than the installed binary's is refused unless --force
  checksum   --sha256 HEX or --checksums SHA256SUMS
  signature  with --pubkey: the minisign signature (--signature, default
             FILE.minisig) verifies
  directory  the installed binary's directory and its releases directory are
             not writable by other users (a binary or DLL could be planted)
  disk       enough free space for the copies
  smoke      with --smoke "CMD": run it (only when every other check passed),
             it must exit 0 within --smoke-timeout

Without --binary the installed binary itself is checked. The installed path
comes from the running service's status (--name), or --path.

` + refusalHelp + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			out := cmd.OutOrStdout()
			installed, _, err := installedPath(ctx, name, f.path)
			if err != nil {
				return err
			}
			cand := binary
			if cand == "" {
				cand = installed
			}
			o := f.options(installed)
			if binary == "" {
				o.Installed, o.Staged = installed, true
			}
			rep, err := release.Check(ctx, cand, o)
			cr := checkReport{Name: name, Installed: installed, OK: err == nil, Report: rep}
			if err != nil {
				cr.Code, cr.Error = contract.CodeOf(err), err.Error()
			}
			if asJSON {
				printJSON(out, cr)
			} else if rep != nil {
				fmt.Fprintf(out, "checks of %s (installed at %s):\n%s", rep.Binary, installed, rep)
				if err == nil {
					fmt.Fprintln(out, "all checks passed")
				}
			}
			if err != nil {
				ee := refusal(err)
				if asJSON {
					ee.err = errReported
				} else {
					ee.err = fmt.Errorf("refused: %w", err)
				}
				return ee
			}
			return nil
		},
	}
	c.Flags().StringVarP(&name, "name", "n", "", "name of the service's control endpoint")
	c.Flags().StringVar(&binary, "binary", "", "the new binary to check (default: the installed one)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON on stdout")
	c.Flags().DurationVar(&timeout, "timeout", time.Minute, "give up after this long")
	f.add(c, false)
	return c
}
