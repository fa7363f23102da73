package contract

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var allSentinels = map[string]error{
	"ErrBusy": ErrBusy, "ErrTooManyDraining": ErrTooManyDraining, "ErrNotReady": ErrNotReady,
	"ErrStopped": ErrStopped, "ErrSupervised": ErrSupervised, "ErrChildExited": ErrChildExited,
	"ErrReadyTimeout": ErrReadyTimeout, "ErrVersion": ErrVersion, "ErrRefused": ErrRefused,
	"ErrAborted": ErrAborted, "ErrCanceled": ErrCanceled, "ErrParentGone": ErrParentGone,
	"ErrBinary": ErrBinary, "ErrUnsupported": ErrUnsupported, "ErrStateTooLarge": ErrStateTooLarge,
	"ErrStateCorrupt": ErrStateCorrupt, "ErrNoState": ErrNoState, "ErrLink": ErrLink,
	"ErrRolledBack": ErrRolledBack, "ErrNoPrevious": ErrNoPrevious, "ErrGaveUp": ErrGaveUp,
	"ErrCanaryFailed": ErrCanaryFailed, "ErrNoCanary": ErrNoCanary,
}

var allCodes = []string{
	CodeChildExited, CodeReadyTimeout, CodeProtocol, CodeBinary, CodeState, CodeCanceled,
	CodeRolledBack, CodeNoPrevious, CodeGaveUp, CodeBusy, CodeTooMany, CodeStopped,
	CodeUnsupported, CodeSupervised, CodeBadRequest, CodeForbidden, CodeControlProtocol,
	CodeInternal, CodeUsage, CodeUnreachable, CodeTimeout, CodeFailed,
	CodeNotExecutable, CodeModule, CodeChecksum, CodeSignature, CodeSmoke, CodeUnsafeDir, CodeDiskSpace,
	CodeCanaryFailed, CodeNoCanary,
}

func TestEverySentinelHasACode(t *testing.T) {
	if len(allSentinels) != len(sentinelCodes) {
		t.Errorf("%d sentinels listed here, %d mapped", len(allSentinels), len(sentinelCodes))
	}
	for name, err := range allSentinels {
		c := CodeOf(err)
		if c == "" || c == CodeInternal {
			t.Errorf("%s: code %q", name, c)
		}
		if got := CodeOf(ErrorFor(c)); got != c {
			t.Errorf("%s: CodeOf(ErrorFor(%q)) = %q", name, c, got)
		}
	}
}

func TestRoundTripAndExitCodes(t *testing.T) {
	want := map[string]int{
		CodeChildExited: ExitFailed, CodeReadyTimeout: ExitFailed, CodeProtocol: ExitFailed,
		CodeBinary: ExitFailed, CodeState: ExitFailed, CodeCanceled: ExitFailed,
		CodeRolledBack: ExitFailed, CodeNoPrevious: ExitFailed, CodeGaveUp: ExitFailed,
		CodeBusy: ExitBusy, CodeTooMany: ExitBusy, CodeStopped: ExitBusy,
		CodeUnsupported: ExitUsage, CodeSupervised: ExitUsage, CodeUsage: ExitUsage,
		CodeBadRequest: ExitInternal, CodeControlProtocol: ExitInternal, CodeInternal: ExitInternal,
		CodeForbidden: ExitUnreachable, CodeUnreachable: ExitUnreachable,
		CodeTimeout: ExitFailed, CodeFailed: ExitFailed,
		CodeNotExecutable: ExitFailed, CodeModule: ExitFailed, CodeChecksum: ExitFailed,
		CodeSignature: ExitFailed, CodeSmoke: ExitFailed, CodeUnsafeDir: ExitFailed, CodeDiskSpace: ExitFailed,
		CodeCanaryFailed: ExitFailed, CodeNoCanary: ExitUsage,
	}
	if len(want) != len(allCodes) {
		t.Fatalf("%d exit codes expected for %d codes", len(want), len(allCodes))
	}
	for _, c := range allCodes {
		err := ErrorFor(c)
		if err == nil {
			t.Errorf("ErrorFor(%q) = nil", c)
			continue
		}
		if got := CodeOf(err); got != c {
			t.Errorf("CodeOf(ErrorFor(%q)) = %q", c, got)
		}
		if got := CodeOf(fmt.Errorf("context: %w", err)); got != c {
			t.Errorf("CodeOf(wrapped ErrorFor(%q)) = %q", c, got)
		}
		if got := ExitCode(c); got != want[c] {
			t.Errorf("ExitCode(%q) = %d, want %d", c, got, want[c])
		}
	}
	if ErrorFor("") != nil || CodeOf(nil) != "" || ExitCode("") != ExitOK {
		t.Error("success is not the empty code")
	}
	if ExitCode("some_future_code") != ExitFailed {
		t.Error("an unknown code is not a plain failure")
	}
}

func TestCodeOfWrappedAndUnknown(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: 2 older generations are still draining", ErrTooManyDraining), CodeTooMany},
		{fmt.Errorf("upgrade: %w", fmt.Errorf("inner: %w", ErrStateCorrupt)), CodeState},
		{&ExitError{PID: 1, ExitCode: 3}, CodeChildExited},
		{fmt.Errorf("wrapped: %w", &ExitError{PID: 1, ExitCode: 3}), CodeChildExited},
		// The first sentinel in the order wins: a rolled-back upgrade whose
		// new generation exited.
		{fmt.Errorf("%w: %w", ErrRolledBack, &ExitError{PID: 1}), CodeRolledBack},
		// A canary rolled back for its figures is canary_failed, not rolled_back.
		{fmt.Errorf("%w: %w", ErrRolledBack, ErrCanaryFailed), CodeCanaryFailed},
		{errors.Join(errors.New("x"), ErrBusy), CodeBusy},
		{fmt.Errorf("%w: probe", ErrLink), CodeProtocol},
		{fmt.Errorf("free space: %w", NewError(CodeDiskSpace, "not enough free disk space")), CodeDiskSpace},
		{errors.New("something else"), CodeInternal},
		{fmt.Errorf("wrapped: %w", errors.New("something else")), CodeInternal},
	}
	for _, c := range cases {
		if got := CodeOf(c.err); got != c.want {
			t.Errorf("CodeOf(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestRefusalCodes(t *testing.T) {
	for _, err := range []error{ErrVersion, ErrStateTooLarge, ErrStateCorrupt} {
		wrapped := fmt.Errorf("reading: %w", err)
		if got := RefusalError(RefusalCode(wrapped)); got != err {
			t.Errorf("refusal of %v comes back as %v", err, got)
		}
	}
	if RefusalError("stopped") != ErrRefused {
		t.Error("an unknown refusal is not ErrRefused")
	}
}

func TestErrorResponse(t *testing.T) {
	r := ErrorResponse(fmt.Errorf("upgrade: %w", &ExitError{PID: 7, ExitCode: 3, StderrTail: "boom"}))
	if r.OK || r.Code != CodeChildExited || !strings.Contains(r.Error, "exit code 3") {
		t.Fatalf("%+v", r)
	}
	var ee ExitError
	if err := r.Decode(&ee); err != nil || ee.PID != 7 || ee.StderrTail != "boom" {
		t.Fatalf("exit error in the result: %v %+v", err, ee)
	}
	ok := UpgradeResponse(UpgradeResult{PID: 9}, nil)
	var res UpgradeResult
	if !ok.OK || ok.Decode(&res) != nil || res.PID != 9 {
		t.Fatalf("%+v", ok)
	}
}

// The JSON names are the protocol: older CLIs read them.
func TestWireNames(t *testing.T) {
	now := time.Unix(0, 0).UTC()
	n := 2
	st := Status{Last: &Outcome{Result: &UpgradeResult{}}, ReadyAt: &now, ParentPID: 1,
		Supervisor: &SupervisorInfo{LogFile: "x", Generations: []GenInfo{{Conns: &n}}}}
	keys := func(v any) []string {
		b, _ := json.Marshal(v)
		var m map[string]json.RawMessage
		_ = json.Unmarshal(b, &m)
		var out []string
		for k := range m {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	check := func(what string, v any, want ...string) {
		t.Helper()
		slices.Sort(want)
		if got := keys(v); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: JSON names %v, want %v", what, got, want)
		}
	}
	check("Status", st, "name", "pid", "generation", "phase", "binary", "started_at", "ready_at", "uptime_ns",
		"listeners", "open_handles", "draining_pids", "parent_pid", "last_upgrade", "supervisor")
	check("Outcome", st.Last, "at", "ok", "result")
	check("UpgradeResult", UpgradeResult{}, "pid", "generation", "binary", "ready_after_ns", "app_startup_ns", "took_ns", "draining")
	check("SupervisorInfo", st.Supervisor, "pid", "restarts", "command", "log_file", "generations")
	check("GenInfo", st.Supervisor.Generations[0], "generation", "pid", "binary", "sha256", "started_at", "ready_after_ns", "state", "conns")
	check("ExitError", ExitError{Signal: "killed", StderrTail: "x"}, "pid", "exit_code", "signal", "stderr_tail")
	check("Request", Request{Binary: "b", Since: 1}, "baton", "op", "binary", "since")
	check("Response", Response{Code: "c", Error: "e", Result: json.RawMessage("1")}, "baton", "ok", "code", "error", "result")
	check("LogsResult", LogsResult{}, "lines", "next")
	check("LogLine", LogLine{}, "seq", "text")
	check("LinkHello", LinkHello{}, "v", "pid")
	check("LinkReply", LinkReply{Code: "c", Error: "e"}, "ok", "code", "error")
}
