//go:build unix

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHTTP2UpgradesUnderLoad: 20 `baton upgrade`s of hello under HTTP/2
// load, without TLS (h2c, prior knowledge) and over TLS (ALPN h2), from
// clients that do not retry: no request may fail.
//
// Each client connection carries several concurrent streams (HTTP/2's
// multiplexing), so that a GOAWAY always races requests on their way to
// the server: that is where a single GOAWAY, whose last stream id is
// fixed when it is written, loses requests the client had already sent.
func TestHTTP2UpgradesUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end load test")
	}
	for _, mode := range []string{"h2c", "tls"} {
		t.Run(mode, func(t *testing.T) { testHTTP2Upgrades(t, mode) })
	}
}

func testHTTP2Upgrades(t *testing.T, mode string) {
	addr := freeAddr(t, "tcp")
	args := []string{"-addr", addr, "-idle-grace", "1s", "-drain-timeout", drainTimeout.String()}
	// A transport each: a transport multiplexes everything to one host
	// over one connection.
	newTransport := func() *http.Transport {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		return tr
	}
	url := "http://" + addr + "/"
	switch mode {
	case "h2c":
		args = append(args, "-h2c")
	case "tls":
		certFile, keyFile, pool := selfSignedCert(t)
		args = append(args, "-tls-cert", certFile, "-tls-key", keyFile)
		newTransport = func() *http.Transport {
			tr := &http.Transport{Protocols: new(http.Protocols), TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}
			tr.Protocols.SetHTTP2(true)
			return tr
		}
		url = "https://" + addr + "/"
	}
	svc, _ := startHello(t, "h2-"+mode, args...)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// 3 connections with 4 concurrent streams each.
	load := startH2Load(ctx, h2LoadConfig{URL: url, NewTransport: newTransport, Conns: 3, StreamsPerConn: 4, MaxRequests: 1_000_000})
	if err := load.waitPID(ctx, st.PID); err != nil {
		t.Fatal(err)
	}

	const upgrades = 20
	pids := []int{st.PID}
	tick := time.NewTicker(500 * time.Millisecond) // pacing, as in TestUpgradesUnderLoad
	defer tick.Stop()
	for i := 0; i < upgrades; i++ {
		<-tick.C
		rep, err := svc.Upgrade(ctx)
		if err != nil {
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		if rep.ExitCode != 0 || !rep.OK || rep.Result == nil {
			t.Fatalf("upgrade %d: exit %d, %s: %s %s", i+1, rep.ExitCode, rep.Code, rep.Error, rep.Stderr)
		}
		if err := load.waitPID(ctx, rep.Result.PID); err != nil {
			t.Fatalf("upgrade %d: no response from the new pid %d: %v", i+1, rep.Result.PID, err)
		}
		pids = append(pids, rep.Result.PID)
	}
	// The last generation serves a while too.
	if err := load.waitOK(ctx, load.ok.Load()+2000); err != nil {
		t.Errorf("load after the last upgrade: %v", err)
	}
	res := load.stop()
	t.Logf("%s: %s", mode, res)
	if res.ok == 0 {
		t.Errorf("no successful request at all")
	}
	if res.failed != 0 {
		t.Errorf("%d of %d requests failed: %v", res.failed, res.ok+res.failed, res.failures)
	}
	for _, pid := range pids {
		if res.pids[pid] == 0 {
			t.Errorf("generation pid %d never answered", pid)
		}
	}
	// Every old generation exits within its drain deadline.
	for _, pid := range pids[:len(pids)-1] {
		wctx, wcancel := context.WithTimeout(ctx, drainTimeout+5*time.Second)
		if _, err := tracker.WaitExit(wctx, pid); err != nil {
			t.Errorf("old generation %d did not exit: %v", pid, err)
		}
		wcancel()
	}
}

// selfSignedCert writes a fresh self-signed certificate for localhost and
// 127.0.0.1 and its key, and returns their paths and a pool trusting it.
func selfSignedCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "baton e2e"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// h2Load sends POSTs with a body over HTTP/2 and never re-sends a request
// the server may have seen. net/http's transport re-sends a request only
// through Request.GetBody; here GetBody refuses once the request's HEADERS
// frame has been written (httptrace's WroteHeaders, called even when the
// write failed): a request refused by a GOAWAY after it left fails. It
// lets the transport send a request it never wrote on another connection
// (a connection that got a GOAWAY while the request waited for it: the
// server never saw it), as grpc-go's transparent retry does; those are
// counted apart (resent). Every failure is counted, by kind.
type h2Load struct {
	cfg     h2LoadConfig
	halt    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	done    chan struct{} // closed once every worker has returned
	clients []*http.Client
	issued  atomic.Int64
	ok      atomic.Int64
	resent  atomic.Int64 // requests never written, sent again

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every new pid or every 1000 answers
	pids     map[int]int64
	failed   map[string]int64
	failures []string
}

type h2LoadConfig struct {
	URL            string
	NewTransport   func() *http.Transport // called once per connection
	Conns          int
	StreamsPerConn int
	MaxRequests    int64
}

type h2Result struct {
	ok, failed int64
	resent     int64
	byKind     map[string]int64
	pids       map[int]int64
	failures   []string
}

func (r h2Result) String() string {
	kinds := make([]string, 0, len(r.byKind))
	for k, n := range r.byKind {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("%d requests, %d ok, %d failed %v, answered by %d pids; %d never written at first, sent on another connection",
		r.ok+r.failed, r.ok, r.failed, kinds, len(r.pids), r.resent)
}

func startH2Load(ctx context.Context, cfg h2LoadConfig) *h2Load {
	l := &h2Load{cfg: cfg, halt: make(chan struct{}), done: make(chan struct{}), changed: make(chan struct{}), pids: map[int]int64{}, failed: map[string]int64{}}
	payload := strings.Repeat("x", 1024)
	for range cfg.Conns {
		client := &http.Client{Transport: cfg.NewTransport(), Timeout: 10 * time.Second}
		l.clients = append(l.clients, client)
		for range cfg.StreamsPerConn {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for {
					select {
					case <-ctx.Done():
						return
					case <-l.halt:
						return
					default:
					}
					if l.issued.Add(1) > cfg.MaxRequests {
						return
					}
					l.one(client, payload)
				}
			}()
		}
	}
	go func() { l.wg.Wait(); close(l.done) }()
	return l
}

// errSent is GetBody's answer for a request that has left the client.
var errSent = errors.New("request already sent: not sent again")

func (l *h2Load) one(client *http.Client, payload string) {
	var wrote atomic.Bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.cfg.URL, strings.NewReader(payload))
	if err != nil {
		l.fail("request", err.Error())
		return
	}
	req.GetBody = func() (io.ReadCloser, error) {
		if wrote.Load() {
			return nil, errSent
		}
		l.resent.Add(1)
		return io.NopCloser(strings.NewReader(payload)), nil
	}
	resp, err := client.Do(req)
	if err != nil {
		l.fail(failureKind(err), err.Error())
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		l.fail("body "+failureKind(err), err.Error())
	case resp.ProtoMajor != 2:
		l.fail("not-http2", resp.Proto)
	case resp.StatusCode != http.StatusOK:
		l.fail("status "+strconv.Itoa(resp.StatusCode), string(body))
	default:
		pid, err := strconv.Atoi(resp.Header.Get("X-Pid"))
		if err != nil {
			l.fail("no-pid", resp.Header.Get("X-Pid"))
			return
		}
		n := l.ok.Add(1)
		l.mu.Lock()
		l.pids[pid]++
		if l.pids[pid] == 1 || n%1000 == 0 {
			close(l.changed)
			l.changed = make(chan struct{})
		}
		l.mu.Unlock()
	}
}

func failureKind(err error) string {
	s := err.Error()
	switch {
	case errors.Is(err, errSent):
		return "refused-after-sent"
	case strings.Contains(s, "GOAWAY"):
		return "goaway"
	case strings.Contains(s, "RST_STREAM") || strings.Contains(s, "stream error"):
		return "rst-stream"
	case errors.Is(err, os.ErrDeadlineExceeded) || strings.Contains(s, "Client.Timeout"):
		return "timeout"
	case strings.Contains(s, "connection refused"):
		return "refused"
	case strings.Contains(s, "connection reset"):
		return "reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(s, "EOF"):
		return "eof"
	}
	return "other"
}

func (l *h2Load) fail(kind, detail string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed[kind]++
	if len(l.failures) < 20 {
		l.failures = append(l.failures, time.Now().Format("15:04:05.000")+" "+kind+": "+detail)
	}
}

// waitPID waits until pid has answered a request.
func (l *h2Load) waitPID(ctx context.Context, pid int) error {
	return l.waitFor(ctx, func() bool { return l.pids[pid] > 0 }, fmt.Sprintf("an answer from pid %d", pid))
}

// waitOK waits until n requests succeeded in total.
func (l *h2Load) waitOK(ctx context.Context, n int64) error {
	return l.waitFor(ctx, func() bool { return l.ok.Load() >= n }, fmt.Sprintf("%d successful requests", n))
}

func (l *h2Load) waitFor(ctx context.Context, cond func() bool, what string) error {
	for {
		l.mu.Lock()
		met, ch := cond(), l.changed
		l.mu.Unlock()
		if met {
			return nil
		}
		select {
		case <-ch:
		case <-l.done:
			l.mu.Lock()
			defer l.mu.Unlock()
			if cond() {
				return nil
			}
			return fmt.Errorf("load ended before %s", what)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		}
	}
}

func (l *h2Load) stop() h2Result {
	l.once.Do(func() { close(l.halt) })
	<-l.done
	for _, c := range l.clients {
		c.CloseIdleConnections()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r := h2Result{ok: l.ok.Load(), resent: l.resent.Load(), byKind: map[string]int64{}, pids: map[int]int64{}, failures: l.failures}
	for k, n := range l.failed {
		r.byKind[k] = n
		r.failed += n
	}
	for p, n := range l.pids {
		r.pids[p] = n
	}
	return r
}
