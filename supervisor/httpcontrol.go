package supervisor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/contract"
	"golang.org/x/time/rate"
)

// The control operations over HTTP+JSON (baton run --http-control): the
// same operations, request handler (Supervisor.handle) and wire documents
// (contract.Response: ok, code, error, result) as the control socket, for
// callers that cannot reach the socket (a deploy tool on another host,
// through a tunnel). Every request needs the bearer token; every request
// is recorded as an event (baton.control_request).
//
//	GET  /v1/status           status
//	POST /v1/upgrade          upgrade to the installed binary; optional body {"expect_sha256": "...",
//	                          "canary": {"steps": [10], "step_interval_ns": ..., ...}} (proxy mode)
//	POST /v1/rollback         roll back to the previous generation's binary (proxy mode: end the canary)
//	POST /v1/promote          proxy mode: the canary takes all traffic
//	POST /v1/weight           proxy mode: body {"weight": P}, the canary's share in percent
//	POST /v1/stop             drain every generation and stop
//	GET  /v1/logs?since=N     the generations' output from line N (negative: the last -N lines)

// Errors of the HTTP control endpoint's configuration.
var (
	// ErrTokenFile: the bearer token file is missing, empty, or others
	// may read or change it.
	ErrTokenFile = errors.New("http control token file")
	// ErrNotLoopback: the address is not a loopback one, and remote
	// callers were not allowed explicitly.
	ErrNotLoopback = errors.New("not a loopback address")
)

// HTTPControlConfig configures the control endpoint over HTTP.
type HTTPControlConfig struct {
	// Token is the bearer token every request must carry
	// (Authorization: Bearer TOKEN). Required.
	Token []byte
	// RatePerMinute bounds the requests answered, whoever sends them
	// (bursts of as many; 0: 60). Those over it get 429.
	RatePerMinute int
}

// DefaultHTTPControlRate is HTTPControlConfig.RatePerMinute's default.
const DefaultHTTPControlRate = 60

// HTTPControl returns the handler of the control operations over HTTP
// (see ServeHTTPControl for serving it).
func (s *Supervisor) HTTPControl(cfg HTTPControlConfig) (http.Handler, error) {
	return newHTTPControl(s.handle, s.emit, s.log, cfg)
}

// ServeHTTPControl answers control requests over HTTP on ln, from the time
// the first generation serves (as the control socket does; connections
// wait in the backlog until then). stop shuts it down: requests being
// answered get up to 5 s to finish (the answer to a stop is written before
// the supervisor's Run returns).
func (s *Supervisor) ServeHTTPControl(ln net.Listener, cfg HTTPControlConfig) (stop func(), err error) {
	h, err := s.HTTPControl(cfg)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	done := make(chan struct{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		select {
		case <-s.serving:
			s.log.Info("answering control requests over HTTP", "addr", ln.Addr().String())
			_ = srv.Serve(ln)
		case <-done:
		}
	}()
	return func() {
		close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		ln.Close()
		<-served
	}, nil
}

// emit keeps a record that is no lifecycle notice (a control request) in
// the events file and hands it to the subscribers.
func (s *Supervisor) emit(r events.Record) {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	r.Service, r.Source = s.cfg.Name, "supervisor"
	if s.events != nil && s.events.Log != nil {
		if err := s.events.Log.Emit(r); err != nil {
			s.log.Warn("cannot write the events file", "event", r.Name, "err", err)
		}
	}
	for _, fn := range s.subscribers() {
		fn(r)
	}
}

// httpControl is the HTTP face of a control request handler.
type httpControl struct {
	handle  func(context.Context, contract.Request) contract.Response
	emit    func(events.Record)
	log     *slog.Logger
	token   [sha256.Size]byte // compared as hashes: constant time whatever the lengths
	limit   *rate.Limiter
	ctx     context.Context // requests run on it, not on the caller's connection (as on the socket)
	limited limitedLog
}

func newHTTPControl(handle func(context.Context, contract.Request) contract.Response, emit func(events.Record),
	log *slog.Logger, cfg HTTPControlConfig) (*httpControl, error) {
	if len(bytes.TrimSpace(cfg.Token)) == 0 {
		return nil, fmt.Errorf("%w: no token", ErrTokenFile)
	}
	n := cfg.RatePerMinute
	if n <= 0 {
		n = DefaultHTTPControlRate
	}
	if log == nil {
		log = slog.Default()
	}
	return &httpControl{handle: handle, emit: emit, log: log, token: sha256.Sum256(bytes.TrimSpace(cfg.Token)),
		limit: rate.NewLimiter(rate.Every(time.Minute/time.Duration(n)), n), ctx: context.Background(),
		limited: limitedLog{every: rate.NewLimiter(rate.Every(time.Second), 1)}}, nil
}

// route is an operation's method and control operation by path.
var routes = map[string]struct{ method, op string }{
	"/v1/status":   {http.MethodGet, contract.OpStatus},
	"/v1/upgrade":  {http.MethodPost, contract.OpUpgrade},
	"/v1/rollback": {http.MethodPost, contract.OpRollback},
	"/v1/stop":     {http.MethodPost, contract.OpStop},
	"/v1/promote":  {http.MethodPost, contract.OpPromote},
	"/v1/weight":   {http.MethodPost, contract.OpWeight},
	"/v1/logs":     {http.MethodGet, contract.OpLogs},
}

func (h *httpControl) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	op := r.URL.Path
	if rt, ok := routes[r.URL.Path]; ok {
		op = rt.op
	}
	status, resp := h.answer(r)
	resp.Version = contract.ControlVersion
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	switch status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="baton"`)
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", strconv.Itoa(h.retryAfter()))
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", routes[r.URL.Path].method)
	}
	w.WriteHeader(status)
	b, _ := json.Marshal(resp)
	_, _ = w.Write(append(b, '\n'))

	rec := events.Record{Name: events.ControlRequest, Operation: op, ErrorType: resp.Code, Error: resp.Error,
		Duration: time.Since(start).Seconds(),
		Message:  fmt.Sprintf("%s %s from %s: %d", r.Method, r.URL.Path, r.RemoteAddr, status)}
	if status == http.StatusTooManyRequests {
		// A flood must not flood the events file: one record a second,
		// saying how many were refused since the last.
		n, ok := h.limited.add()
		if !ok {
			return
		}
		rec.Message = fmt.Sprintf("%s (%d requests refused by the rate limit since the last record)", rec.Message, n)
	}
	h.log.Info("http control request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "status", status, "code", resp.Code)
	h.emit(rec)
}

// answer checks and runs one request: its HTTP status and answer.
func (h *httpControl) answer(r *http.Request) (int, contract.Response) {
	if !h.limit.Allow() {
		return http.StatusTooManyRequests, contract.Response{Code: contract.CodeBusy,
			Error: "rate limited: too many control requests; retry later"}
	}
	if !h.authorized(r) {
		return http.StatusUnauthorized, contract.Response{Code: contract.CodeForbidden,
			Error: "missing or wrong bearer token (Authorization: Bearer TOKEN, the token of --http-control-token-file)"}
	}
	rt, ok := routes[r.URL.Path]
	if !ok {
		return http.StatusNotFound, contract.Response{Code: contract.CodeBadRequest,
			Error: "unknown operation " + r.URL.Path + ": use GET /v1/status, POST /v1/upgrade, POST /v1/rollback, POST /v1/promote, POST /v1/weight, POST /v1/stop or GET /v1/logs"}
	}
	if r.Method != rt.method {
		return http.StatusMethodNotAllowed, contract.Response{Code: contract.CodeBadRequest,
			Error: fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, rt.method)}
	}
	req := contract.Request{Version: contract.ControlVersion, Op: rt.op}
	switch rt.op {
	case contract.OpUpgrade:
		var body struct {
			ExpectSHA256 string               `json:"expect_sha256"`
			Canary       *contract.CanaryPlan `json:"canary"`
		}
		if err := decodeBody(r, &body); err != nil {
			return http.StatusBadRequest, contract.Response{Code: contract.CodeBadRequest,
				Error: fmt.Sprintf("upgrade request body: %v (the fields are expect_sha256 and canary; install the new binary first, then POST /v1/upgrade)", err)}
		}
		req.ExpectSHA256, req.Canary = body.ExpectSHA256, body.Canary
	case contract.OpWeight:
		var body struct {
			Weight *int `json:"weight"`
		}
		if err := decodeBody(r, &body); err != nil || body.Weight == nil {
			return http.StatusBadRequest, contract.Response{Code: contract.CodeBadRequest,
				Error: fmt.Sprintf("weight request body: want {\"weight\": P}, the canary's share in percent (%v)", err)}
		}
		req.Weight = body.Weight
	case contract.OpLogs:
		if v := r.URL.Query().Get("since"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return http.StatusBadRequest, contract.Response{Code: contract.CodeBadRequest, Error: "since: " + err.Error()}
			}
			req.Since = n
		}
	}
	resp := h.handle(h.ctx, req)
	return httpStatus(resp.Code), resp
}

// decodeBody decodes r's JSON body, if any, into v; unknown fields are
// refused.
func decodeBody(r *http.Request, v any) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func (h *httpControl) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(got[:], h.token[:]) == 1
}

// retryAfter is when the rate limit answers again, in whole seconds.
func (h *httpControl) retryAfter() int {
	r := h.limit.Reserve()
	d := r.Delay()
	r.Cancel()
	return max(1, int((d+time.Second-1)/time.Second))
}

// httpStatus is the HTTP status of an answer with the wire code code; the
// body's code says more.
func httpStatus(code string) int {
	switch code {
	case "":
		return http.StatusOK
	case contract.CodeBadRequest, contract.CodeUsage, contract.CodeControlProtocol:
		return http.StatusBadRequest
	case contract.CodeForbidden:
		return http.StatusForbidden
	case contract.CodeBusy, contract.CodeTooMany, contract.CodeStopped, contract.CodeNoPrevious:
		return http.StatusConflict // retry later, or nothing to do
	case contract.CodeUnsupported, contract.CodeSupervised:
		return http.StatusNotImplemented
	case contract.CodeInternal:
		return http.StatusInternalServerError
	}
	// The operation was run and failed (the new generation exited, was
	// not ready in time, was rolled back...): the serving one keeps
	// serving.
	return http.StatusUnprocessableEntity
}

// limitedLog lets one rate-limited request a second be recorded.
type limitedLog struct {
	every *rate.Limiter
	mu    sync.Mutex
	n     int
}

// add counts a refused request; ok says whether to record it, with the
// number refused since the last record (this one included).
func (l *limitedLog) add() (n int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if !l.every.Allow() {
		return 0, false
	}
	n, l.n = l.n, 0
	return n, true
}

// ReadTokenFile reads the bearer token of the HTTP control endpoint from
// path (surrounding white space dropped). It refuses (ErrTokenFile) a
// missing or empty file, and, on Unix, one that is not a regular file, not
// owned by this user or root, or that its group or others may read or
// write (chmod 600); on Windows its ACL is the administrator's to set.
func ReadTokenFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenFile, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenFile, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrTokenFile, path)
	}
	if err := checkTokenFile(path, fi); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrTokenFile, path, err)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: %s is empty: write a long random token into it, e.g. head -c 32 /dev/urandom | base64 > %s", ErrTokenFile, path, path)
	}
	return b, nil
}

// CheckHTTPControlAddr refuses (ErrNotLoopback) a bound address that is
// not a loopback one unless remote callers are allowed.
func CheckHTTPControlAddr(addr net.Addr, allowRemote bool) error {
	if allowRemote || isLoopback(addr) {
		return nil
	}
	return fmt.Errorf("%w: %s: the HTTP control endpoint listens on loopback addresses (127.0.0.1, [::1]) unless --http-control-allow-remote says otherwise", ErrNotLoopback, addr)
}

func isLoopback(addr net.Addr) bool {
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
