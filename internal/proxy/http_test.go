package proxy

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/loadgen"
)

// Weights 0/100 send everything to one backend; 10/90 gives 10% ± 2 of
// ≥ 2,000 keep-alive requests (by X-Pid); a single keep-alive client
// connection is not pinned to a backend.
func TestHTTPWeights(t *testing.T) {
	a, b := startApp(t, "a", 101, nil), startApp(t, "b", 102, nil)
	set := NewSet(SetOptions{})
	p, addr := startHTTP(t, set, HTTPOptions{})
	ka := map[loadgen.Kind]int{loadgen.KeepAliveGET: 4}

	mustSet(t, set, a.backend(0), b.backend(100))
	r := runLoad(t, addr, ka, 500)
	if r.TotalFailed() != 0 || r.PIDs[102].Responses != 500 || r.PIDs[101].Responses != 0 {
		t.Fatalf("0/100: %v", r)
	}

	mustSet(t, set, a.backend(10), b.backend(90))
	r = runLoad(t, addr, ka, 2000)
	sa, sb := share(r, 101), share(r, 102)
	t.Logf("10/90 over %d requests: a %.1f%%, b %.1f%%", r.TotalOK(), sa, sb)
	if r.TotalFailed() != 0 || r.TotalOK() != 2000 || sa < 8 || sa > 12 || sb < 88 || sb > 92 {
		t.Fatalf("10/90: a %.1f%%, b %.1f%%: %v", sa, sb, r)
	}
	st := set.Stats()
	if st["a"].Requests != r.PIDs[101].Responses || st["b"].Requests != 500+r.PIDs[102].Responses {
		t.Errorf("stats disagree with the clients: a %d b %d", st["a"].Requests, st["b"].Requests)
	}
	if st["a"].Window.P99 <= 0 || st["a"].ErrorRatio() != 0 {
		t.Errorf("a's stats: %+v", st["a"].Window)
	}

	mustSet(t, set, a.backend(50), b.backend(50))
	r = runLoad(t, addr, map[loadgen.Kind]int{loadgen.KeepAliveGET: 1}, 100)
	if r.TotalFailed() != 0 || r.PIDs[101].Responses != 50 || r.PIDs[102].Responses != 50 {
		t.Errorf("one keep-alive client at 50/50: %v", r)
	}
	if p.Failed() != 0 {
		t.Errorf("proxy failed %d", p.Failed())
	}
}

// Generations come and go under non-retried POST, keep-alive GET and
// fresh-connection load: blue/green switches and canary steps, each old
// generation stopped (its server closed) once WaitIdle says nothing is
// in flight there. Not one request may fail.
func TestHTTPSwitchUnderLoadLosesNothing(t *testing.T) {
	set := NewSet(SetOptions{})
	_, addr := startHTTP(t, set, HTTPOptions{})
	const gens = 12
	apps := make([]*app, gens)
	apps[0] = startApp(t, "gen-0", 1000, nil)
	mustSet(t, set, apps[0].backend(100))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := loadgen.Start(ctx, loadgen.Config{Addr: addr, Pause: -1, MaxRequests: 1_000_000, Workers: map[loadgen.Kind]int{
		loadgen.KeepAlivePOST: 4, loadgen.KeepAliveGET: 2, loadgen.Fresh: 2,
	}})
	if err != nil {
		t.Fatal(err)
	}
	progress := func() {
		t.Helper()
		base := l.Snapshot().TotalOK()
		waitFor(t, "100 more answers", func() bool { return l.Snapshot().TotalOK() >= base+100 })
	}
	progress()
	for g := 1; g < gens; g++ {
		prev := apps[g-1]
		apps[g] = startApp(t, fmt.Sprintf("gen-%d", g), 1000+g, nil)
		if g%2 == 0 { // canary steps 10, 50, then 100
			mustSet(t, set, prev.backend(90), apps[g].backend(10))
			progress()
			mustSet(t, set, prev.backend(50), apps[g].backend(50))
			progress()
		}
		mustSet(t, set, apps[g].backend(100)) // blue/green: prev removed
		if err := set.WaitIdle(ctx, prev.id); err != nil {
			t.Fatal(err)
		}
		prev.srv.Close() // the old generation drains and exits
		progress()
	}
	r := l.Stop()
	t.Logf("%d generations: %v", gens, r)
	if r.TotalFailed() != 0 {
		t.Fatalf("%d requests failed across the switches", r.TotalFailed())
	}
	for g, a := range apps {
		if r.PIDs[a.pid].Responses == 0 {
			t.Errorf("generation %d answered nothing", g)
		}
	}
}

// A backend removed while a request is in flight there finishes it; new
// requests go elsewhere; once idle, its pooled connections are closed.
func TestHTTPRemoveWhileInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	a := startApp(t, "a", 101, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	b := startApp(t, "b", 102, nil)
	set := NewSet(SetOptions{})
	_, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, a.backend(100), b.backend(0))

	// A first request leaves a pooled connection to a.
	if got := get(t, "http://"+addr+"/"); got != "a" {
		t.Fatalf("first request went to %s", got)
	}
	type result struct {
		body, from string
		err        error
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := http.Post("http://"+addr+"/slow", "text/plain", strings.NewReader("payload"))
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		slow <- result{string(body), resp.Header.Get("X-Backend"), err}
	}()
	<-entered
	mustSet(t, set, b.backend(100))
	if st := set.Stats()["a"]; st.Active || st.InFlight != 1 {
		t.Fatalf("a after removal: active %v, in flight %d", st.Active, st.InFlight)
	}
	for range 5 {
		if got := get(t, "http://"+addr+"/"); got != "b" {
			t.Fatalf("new request went to %s after a was removed", got)
		}
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := set.WaitIdle(done, "a"); err == nil {
		t.Fatal("WaitIdle says a is idle with a request in flight")
	}
	close(release)
	res := <-slow
	if res.err != nil || res.body != "done" || res.from != "a" {
		t.Fatalf("in-flight request: %+v", res)
	}
	if err := set.WaitIdle(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a's pooled connections closed by the proxy", func() bool { return a.closed.Load() >= 1 })
}

// get returns the X-Backend of a GET's answer.
func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return resp.Header.Get("X-Backend")
}

// Bodies stream both ways: the client reads the first part of an answer
// (chunked, or of known length) before the backend writes the rest, and
// the backend reads the first part of an upload before the client sends
// the rest.
func TestHTTPStreamsBodies(t *testing.T) {
	more := map[string]chan struct{}{"/download": make(chan struct{}), "/download-sized": make(chan struct{})}
	got1 := make(chan string, 1)
	a := startApp(t, "a", 101, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/download", "/download-sized":
			if r.URL.Path == "/download-sized" {
				w.Header().Set("Content-Length", strconv.Itoa(len("first\nsecond\n")))
			}
			_, _ = io.WriteString(w, "first\n")
			http.NewResponseController(w).Flush()
			<-more[r.URL.Path]
			_, _ = io.WriteString(w, "second\n")
		case "/upload":
			buf := make([]byte, len("part1"))
			if _, err := io.ReadFull(r.Body, buf); err != nil {
				got1 <- "error: " + err.Error()
				return
			}
			got1 <- string(buf)
			rest, _ := io.ReadAll(r.Body)
			_, _ = fmt.Fprintf(w, "%s+%s", buf, rest)
		}
	})
	set := NewSet(SetOptions{})
	_, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, a.backend(1))

	for _, path := range []string{"/download", "/download-sized"} {
		// The answer's header, then its first line, must arrive while the
		// app holds back the rest.
		type first struct {
			resp *http.Response
			br   *bufio.Reader
			line string
			err  error
		}
		got := make(chan first, 1)
		go func() {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				got <- first{err: err}
				return
			}
			br := bufio.NewReader(resp.Body)
			line, err := br.ReadString('\n')
			got <- first{resp, br, line, err}
		}()
		var f first
		select {
		case f = <-got:
		case <-time.After(20 * time.Second):
			close(more[path])
			t.Fatalf("%s: the first part of the answer was held back: the proxy buffers responses", path)
		}
		close(more[path])
		if f.err != nil || f.line != "first\n" {
			t.Fatalf("%s: first line %q, %v", path, f.line, f.err)
		}
		rest, _ := io.ReadAll(f.br)
		f.resp.Body.Close()
		if string(rest) != "second\n" {
			t.Fatalf("%s: rest %q", path, rest)
		}
	}

	pr, pw := io.Pipe()
	answer := make(chan string, 1)
	go func() {
		resp, err := http.Post("http://"+addr+"/upload", "text/plain", pr)
		if err != nil {
			answer <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answer <- string(b)
	}()
	if _, err := io.WriteString(pw, "part1"); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got1:
		if s != "part1" {
			t.Fatalf("backend read %q", s)
		}
	case <-time.After(20 * time.Second):
		pw.Close()
		t.Fatal("the first part of the upload was held back: the proxy buffers requests")
	}
	_, _ = io.WriteString(pw, "part2")
	pw.Close()
	if s := <-answer; s != "part1+part2" {
		t.Fatalf("upload answer %q", s)
	}
}

// An Upgrade (WebSocket handshake) passes through: 101, the negotiated
// headers, then raw bytes both ways over the same connection; the
// upgraded connection counts as in flight until it ends.
func TestHTTPUpgrade(t *testing.T) {
	sawXFF := make(chan string, 1)
	a := startApp(t, "a", 101, func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		sawXFF <- r.Header.Get("X-Forwarded-For")
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Backend: a\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept(r.Header.Get("Sec-WebSocket-Key")))
		brw.Flush()
		buf := make([]byte, 512)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				_, _ = conn.Write([]byte(strings.ToUpper(string(buf[:n]))))
			}
			if err != nil {
				return
			}
		}
	})
	set := NewSet(SetOptions{})
	_, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, a.backend(1))

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") ||
		resp.Header.Get("Sec-WebSocket-Accept") != accept(key) || resp.Header.Get("X-Backend") != "a" {
		t.Fatalf("handshake answer: %s %v", resp.Status, resp.Header)
	}
	if xff := <-sawXFF; xff != "127.0.0.1" {
		t.Errorf("upgrade request X-Forwarded-For %q", xff)
	}
	for _, msg := range []string{"hello", "over the", "upgraded connection"} {
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != strings.ToUpper(msg) {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
	}
	if st := set.Stats()["a"]; st.InFlight != 1 || st.Requests != 1 {
		t.Errorf("during the upgraded connection: in flight %d, requests %d", st.InFlight, st.Requests)
	}
	c.Close()
	waitFor(t, "the upgraded connection to end", func() bool { return set.Stats()["a"].InFlight == 0 })
}

// accept is RFC 6455's Sec-WebSocket-Accept for a key.
func accept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC11B85"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// X-Forwarded-For/-Host/-Proto and Forwarded describe the client; what a
// client claims is replaced unless TrustForwarded; Host is the client's.
func TestHTTPForwardedHeaders(t *testing.T) {
	a := startApp(t, "a", 101, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{
			"xff": r.Header.Get("X-Forwarded-For"), "xfh": r.Header.Get("X-Forwarded-Host"),
			"xfp": r.Header.Get("X-Forwarded-Proto"), "fwd": strings.Join(r.Header["Forwarded"], ", "),
			"host": r.Host,
		})
	})
	for _, c := range []struct {
		trust   bool
		xff     string
		fwd     string
		host    string
		wantFwd string
	}{
		{false, "127.0.0.1", "", "example.test", "for=127.0.0.1;host=example.test;proto=http"},
		{true, "203.0.113.9, 127.0.0.1", "for=203.0.113.9", "example.test:8080", `for=203.0.113.9, for=127.0.0.1;host="example.test:8080";proto=http`},
	} {
		set := NewSet(SetOptions{})
		_, addr := startHTTP(t, set, HTTPOptions{TrustForwarded: c.trust})
		mustSet(t, set, a.backend(1))
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Host = c.host
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		req.Header.Set("Forwarded", "for=203.0.113.9")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]string
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"xff": c.xff, "xfh": c.host, "xfp": "http", "fwd": c.wantFwd, "host": c.host}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("trust=%v: %s = %q, want %q", c.trust, k, got[k], v)
			}
		}
	}
	if got := forwarded(&http.Request{RemoteAddr: "[::1]:5000", Host: `we"ird`}); got != `for="[::1]";host="we\"ird";proto=http` {
		t.Errorf("IPv6 Forwarded element: %s", got)
	}
}

// With Sticky, the cookie set on the first answer pins a client to that
// backend while its weight is above 0; the cookie is not passed on.
func TestHTTPSticky(t *testing.T) {
	var mu sync.Mutex
	var cookies []string
	h := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		cookies = append(cookies, r.Header.Get("Cookie"))
		mu.Unlock()
	}
	a, b := startApp(t, "a", 101, h), startApp(t, "b", 102, h)
	set := NewSet(SetOptions{})
	_, addr := startHTTP(t, set, HTTPOptions{Sticky: true})
	mustSet(t, set, a.backend(50), b.backend(50))

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	url := "http://" + addr + "/"
	do := func() string {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Cookie", "theme=dark")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("X-Backend")
	}
	first := do()
	for i := range 50 {
		if got := do(); got != first {
			t.Fatalf("request %d went to %s, pinned to %s", i, got, first)
		}
	}
	mu.Lock()
	for _, c := range cookies[1:] {
		if !strings.Contains(c, "theme=dark") || strings.Contains(c, DefaultStickyCookie) {
			t.Fatalf("backend saw Cookie %q", c)
		}
	}
	mu.Unlock()
	other := map[string]*app{"a": b, "b": a}[first]
	pinned := map[string]*app{"a": a, "b": b}[first]
	mustSet(t, set, pinned.backend(0), other.backend(100))
	for range 10 {
		if got := do(); got != other.id {
			t.Fatalf("pinned to %s at weight 0: went to %s", first, got)
		}
	}
	mustSet(t, set, pinned.backend(50), other.backend(50))
	for range 10 {
		if got := do(); got != other.id {
			t.Fatalf("re-pinned to %s: went to %s", other.id, got)
		}
	}
	// Without a cookie jar the same client alternates.
	seen := map[string]bool{}
	for range 4 {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		seen[resp.Header.Get("X-Backend")] = true
	}
	if len(seen) != 2 {
		t.Errorf("cookie-less requests at 50/50 saw %v", seen)
	}
}

// A request that could not be sent (dial error) goes to another backend,
// whatever its method; one that was sent and got no answer is answered
// 502 unless idempotent, and never reaches a second backend.
func TestHTTPRetries(t *testing.T) {
	b := startApp(t, "b", 102, nil)
	set := NewSet(SetOptions{})
	p, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, Backend{ID: "dead", Network: "tcp", Addr: deadAddr(t), Weight: 50}, b.backend(50))
	r := runLoad(t, addr, map[loadgen.Kind]int{loadgen.KeepAlivePOST: 2, loadgen.Fresh: 1}, 300)
	st := set.Stats()
	if r.TotalFailed() != 0 || r.PIDs[102].Responses != 300 {
		t.Fatalf("POSTs with a dead backend: %v", r)
	}
	if d := st["dead"]; d.ConnErrors == 0 || d.Retried != d.ConnErrors || d.Requests != 0 {
		t.Errorf("dead backend stats: %+v", d)
	}

	// "mute" reads each request, then hangs up without an answer.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	mute := map[string]bool{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					mu.Lock()
					mute[req.Header.Get("X-Req")] = true
					mu.Unlock()
					return
				}
			}()
		}
	}()
	var bmu sync.Mutex
	bSaw := map[string]bool{}
	b2 := startApp(t, "b2", 103, func(w http.ResponseWriter, r *http.Request) {
		bmu.Lock()
		bSaw[r.Header.Get("X-Req")] = true
		bmu.Unlock()
	})
	mustSet(t, set, Backend{ID: "mute", Network: "tcp", Addr: ln.Addr().String(), Weight: 50}, b2.backend(50))
	failedBefore := p.Failed()
	status := map[string]int{}
	for i := range 20 {
		for _, method := range []string{"POST", "GET"} {
			id := fmt.Sprintf("%s-%d", method, i)
			var body io.Reader
			if method == "POST" {
				body = strings.NewReader("once only")
			}
			req, _ := http.NewRequest(method, "http://"+addr+"/", body)
			req.Header.Set("X-Req", id)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			status[id] = resp.StatusCode
		}
	}
	mu.Lock()
	bmu.Lock()
	defer mu.Unlock()
	defer bmu.Unlock()
	bad := 0
	for id, code := range status {
		switch {
		case strings.HasPrefix(id, "GET") && code != 200:
			t.Errorf("%s: %d (an idempotent request must be retried)", id, code)
		case strings.HasPrefix(id, "POST") && mute[id] && (code != 502 || bSaw[id]):
			t.Errorf("%s reached the mute backend: answered %d, also sent to b2: %v", id, code, bSaw[id])
		case strings.HasPrefix(id, "POST") && !mute[id] && code != 200:
			t.Errorf("%s: %d", id, code)
		}
		if code == 502 {
			bad++
		}
	}
	if bad == 0 || int64(bad) != p.Failed()-failedBefore || int64(bad) != set.Stats()["mute"].ConnErrors-int64(countGET(mute)) {
		t.Errorf("502s %d, proxy failed %d, mute conn errors %d", bad, p.Failed()-failedBefore, set.Stats()["mute"].ConnErrors)
	}
	t.Logf("mute backend: %d POSTs answered 502, %d GETs passed on; dead backend: %d dial errors passed on", bad, countGET(mute), st["dead"].Retried)
}

func countGET(m map[string]bool) int {
	n := 0
	for id := range m {
		if strings.HasPrefix(id, "GET") {
			n++
		}
	}
	return n
}

// All weights 0: 503, counted as unrouted.
func TestHTTPNoBackend(t *testing.T) {
	a := startApp(t, "a", 101, nil)
	set := NewSet(SetOptions{})
	p, addr := startHTTP(t, set, HTTPOptions{})
	mustSet(t, set, a.backend(0))
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || p.Failed() != 1 || set.Unrouted() != 1 || a.hits.Load() != 0 {
		t.Errorf("status %d, failed %d, unrouted %d, hits %d", resp.StatusCode, p.Failed(), set.Unrouted(), a.hits.Load())
	}
}

func TestTakeCookie(t *testing.T) {
	h := http.Header{"Cookie": {"a=1; baton_backend=gen-3; b=2", "baton_backend=x"}}
	if v := takeCookie(h, "baton_backend"); v != "x" {
		t.Errorf("value %q", v)
	}
	if got := h["Cookie"]; len(got) != 1 || got[0] != "a=1; b=2" {
		t.Errorf("left %q", got)
	}
	h = http.Header{"Cookie": {"baton_backend=gen%201"}}
	if v := takeCookie(h, "baton_backend"); v != "gen 1" || h.Get("Cookie") != "" {
		t.Errorf("value %q, left %q", v, h.Get("Cookie"))
	}
}
