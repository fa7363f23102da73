package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/testenv"
)

const testToken = "s3cret-token-of-the-test"

// controlFixture serves an httpControl over real loopback HTTP with a
// request handler the test scripts, and keeps what it records.
type controlFixture struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []contract.Request
	recs []events.Record
	// answer is the handler's answer (OK status when nil).
	answer func(contract.Request) contract.Response
}

func newControlFixture(t *testing.T, perMinute int) *controlFixture {
	f := &controlFixture{}
	h, err := newHTTPControl(func(_ context.Context, req contract.Request) contract.Response {
		f.mu.Lock()
		f.reqs = append(f.reqs, req)
		answer := f.answer
		f.mu.Unlock()
		if answer != nil {
			return answer(req)
		}
		return contract.OKResponse(contract.Status{Name: "web", Generation: 3})
	}, func(r events.Record) {
		f.mu.Lock()
		f.recs = append(f.recs, r)
		f.mu.Unlock()
	}, nil, HTTPControlConfig{Token: []byte(testToken + "\n"), RatePerMinute: perMinute})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	return f
}

// call sends method path with the given Authorization header ("" none)
// and body, and decodes the answer.
func (f *controlFixture) call(t *testing.T, method, path, auth, body string) (int, http.Header, contract.Response) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var r contract.Response
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s %s: answer is not a control response: %v: %s", method, path, err, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: content type %q", method, path, ct)
	}
	return resp.StatusCode, resp.Header, r
}

func TestHTTPControlRefusesWithoutToken(t *testing.T) {
	f := newControlFixture(t, 1000)
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + testToken + "x", "Basic " + testToken, testToken, "Bearer"} {
		code, h, r := f.call(t, "POST", "/v1/upgrade", auth, "")
		if code != http.StatusUnauthorized || r.OK || r.Code != contract.CodeForbidden || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("Authorization %q: %d %+v, want 401 forbidden with a Bearer challenge", auth, code, r)
		}
	}
	if len(f.reqs) != 0 {
		t.Fatalf("the handler ran for unauthorized requests: %+v", f.reqs)
	}
	code, _, r := f.call(t, "GET", "/v1/status", "Bearer "+testToken, "")
	var st contract.Status
	if code != http.StatusOK || !r.OK || r.Decode(&st) != nil || st.Generation != 3 {
		t.Fatalf("with the token: %d %+v", code, r)
	}
	// Every call was recorded, with its caller and outcome, never the token.
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.recs) != 7 {
		t.Fatalf("%d records for 7 calls: %+v", len(f.recs), f.recs)
	}
	for _, rec := range f.recs {
		b, _ := json.Marshal(rec)
		if rec.Name != events.ControlRequest || !strings.Contains(rec.Message, "from 127.0.0.1:") || strings.Contains(string(b), testToken) || strings.Contains(string(b), "s3cret") {
			t.Errorf("record %s", b)
		}
	}
	if r := f.recs[0]; r.Operation != contract.OpUpgrade || r.ErrorType != contract.CodeForbidden || !strings.Contains(r.Message, ": 401") {
		t.Errorf("refused call recorded as %+v", r)
	}
	if r := f.recs[6]; r.Operation != contract.OpStatus || r.ErrorType != "" || !strings.Contains(r.Message, "GET /v1/status") {
		t.Errorf("status call recorded as %+v", r)
	}
}

// Over the rate, requests get 429 with Retry-After (whether or not they
// carry the token), and the handler does not run.
func TestHTTPControlRateLimit(t *testing.T) {
	f := newControlFixture(t, 3)
	for i := range 3 {
		if code, _, r := f.call(t, "GET", "/v1/status", "Bearer "+testToken, ""); code != http.StatusOK {
			t.Fatalf("request %d: %d %+v", i+1, code, r)
		}
	}
	for _, auth := range []string{"Bearer " + testToken, ""} {
		code, h, r := f.call(t, "GET", "/v1/status", auth, "")
		if code != http.StatusTooManyRequests || r.Code != contract.CodeBusy || h.Get("Retry-After") == "" {
			t.Fatalf("over the rate (auth %q): %d %+v %v, want 429 busy with Retry-After", auth, code, r, h)
		}
	}
	if len(f.reqs) != 3 {
		t.Fatalf("the handler ran %d times, want 3", len(f.reqs))
	}
	// The refused ones are recorded, at most one a second.
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.recs); n != 4 || !strings.Contains(f.recs[3].Message, "429") {
		t.Fatalf("records: %+v, want 3 answered and 1 refused", f.recs)
	}
}

// The operations map to the control requests: methods, the upgrade's
// body, logs' since; the answers' codes to HTTP statuses.
func TestHTTPControlOperations(t *testing.T) {
	f := newControlFixture(t, 1000)
	auth := "Bearer " + testToken
	f.answer = func(req contract.Request) contract.Response {
		switch req.Op {
		case contract.OpUpgrade:
			if req.ExpectSHA256 == "busy" {
				return contract.ErrorResponse(contract.ErrBusy)
			}
			return contract.ErrorResponse(contract.ErrChildExited)
		case contract.OpRollback:
			return contract.ErrorResponse(contract.ErrNoPrevious)
		}
		return contract.OKResponse(req)
	}
	cases := []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/v1/upgrade", "", http.StatusUnprocessableEntity, contract.CodeChildExited},
		{"POST", "/v1/upgrade", `{"expect_sha256":"busy"}`, http.StatusConflict, contract.CodeBusy},
		{"POST", "/v1/upgrade", `{"binary":"/tmp/x"}`, http.StatusBadRequest, contract.CodeBadRequest},
		{"POST", "/v1/upgrade", `{`, http.StatusBadRequest, contract.CodeBadRequest},
		{"POST", "/v1/rollback", "", http.StatusConflict, contract.CodeNoPrevious},
		{"POST", "/v1/stop", "", http.StatusOK, ""},
		{"GET", "/v1/logs?since=-5", "", http.StatusOK, ""},
		{"GET", "/v1/logs?since=x", "", http.StatusBadRequest, contract.CodeBadRequest},
		{"GET", "/v1/upgrade", "", http.StatusMethodNotAllowed, contract.CodeBadRequest},
		{"POST", "/v1/status", "", http.StatusMethodNotAllowed, contract.CodeBadRequest},
		{"GET", "/v2/status", "", http.StatusNotFound, contract.CodeBadRequest},
		{"POST", "/v1/upgrade", `{"canary":{"steps":[10,100],"step_interval_ns":1000000000}}`, http.StatusUnprocessableEntity, contract.CodeChildExited},
		{"POST", "/v1/promote", "", http.StatusOK, ""},
		{"POST", "/v1/weight", `{"weight":25}`, http.StatusOK, ""},
		{"POST", "/v1/weight", "", http.StatusBadRequest, contract.CodeBadRequest},
		{"POST", "/v1/weight", `{"share":25}`, http.StatusBadRequest, contract.CodeBadRequest},
	}
	for _, c := range cases {
		status, _, r := f.call(t, c.method, c.path, auth, c.body)
		if status != c.status || r.Code != c.code || r.Version != contract.ControlVersion {
			t.Errorf("%s %s %s: %d %+v, want %d %q", c.method, c.path, c.body, status, r, c.status, c.code)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var ops []string
	for _, r := range f.reqs {
		ops = append(ops, r.Op)
	}
	if got := strings.Join(ops, " "); got != "upgrade upgrade rollback stop logs upgrade promote weight" {
		t.Errorf("handler ran for %q", got)
	}
	if f.reqs[1].ExpectSHA256 != "busy" || f.reqs[4].Since != -5 {
		t.Errorf("request fields not passed on: %+v", f.reqs)
	}
	if c := f.reqs[5].Canary; c == nil || len(c.Steps) != 2 || c.Steps[1] != 100 || c.StepInterval != time.Second {
		t.Errorf("the canary plan was not passed on: %+v", c)
	}
	if w := f.reqs[7].Weight; w == nil || *w != 25 {
		t.Errorf("the weight was not passed on: %v", w)
	}
}

func TestReadTokenFile(t *testing.T) {
	dir := testenv.TempDir(t) // t.TempDir fails its clean-up under Wine
	p := filepath.Join(dir, "token")
	if _, err := ReadTokenFile(p); !errors.Is(err, ErrTokenFile) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if err := os.WriteFile(p, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadTokenFile(p); !errors.Is(err, ErrTokenFile) || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: %v", err)
	}
	if err := os.WriteFile(p, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := ReadTokenFile(p); err != nil || string(tok) != testToken {
		t.Errorf("token file: %q %v", tok, err)
	}
	if _, err := ReadTokenFile(dir); !errors.Is(err, ErrTokenFile) {
		t.Errorf("a directory: %v", err)
	}
}

func TestCheckHTTPControlAddr(t *testing.T) {
	for _, c := range []struct {
		addr   string
		remote bool
		ok     bool
	}{
		{"127.0.0.1:8080", false, true},
		{"[::1]:8080", false, true},
		{"127.0.0.2:1", false, true},
		{"0.0.0.0:8080", false, false},
		{"[::]:8080", false, false},
		{"192.0.2.1:8080", false, false},
		{"192.0.2.1:8080", true, true},
		{"0.0.0.0:8080", true, true},
	} {
		addr, err := net.ResolveTCPAddr("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		err = CheckHTTPControlAddr(addr, c.remote)
		if (err == nil) != c.ok || err != nil && !errors.Is(err, ErrNotLoopback) {
			t.Errorf("%s allow-remote %v: %v", c.addr, c.remote, err)
		}
	}
}
