package proxy

import (
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// The benchmarks compare serving direct and through the proxy. Each
// iteration runs one batch direct and one through the proxy, in
// alternating order, so that a busy machine slows both alike; the result
// line reports both rates and their ratio ("proxied/direct"):
//
//	go test -run '^$' -bench . -benchtime 20x ./internal/proxy/
//
// Client, proxy and app share one process and the machine's cores: the
// proxy's CPU is taken from the app and the clients, so the ratios are a
// lower bound for a proxy with cores of its own.

const (
	benchClients = 16   // concurrent keep-alive clients
	benchBatch   = 1600 // requests per batch (100 per client)
	bulkBatch    = 16 << 20
)

// benchApp is a small HTTP app: 64-byte answers.
func benchApp(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	body := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(body)
	})}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// batcher sends batches of benchBatch GETs from benchClients keep-alive
// clients to one address.
type batcher struct {
	url    string
	client *http.Client
}

func newBatcher(b *testing.B, addr string) *batcher {
	tr := &http.Transport{MaxIdleConnsPerHost: benchClients, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	return &batcher{url: "http://" + addr + "/", client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// run sends one batch and returns how long it took.
func (bt *batcher) run(b *testing.B) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	for range benchClients {
		wg.Go(func() {
			for range benchBatch / benchClients {
				resp, err := bt.client.Get(bt.url)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %s", resp.Status)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// compare runs b.N rounds of direct and proxied (order alternating) and
// reports both rates (work units per second) and their ratio.
func compare(b *testing.B, unit string, work float64, direct, proxied func() time.Duration) {
	direct() // warm up the connection pools
	proxied()
	var d, p time.Duration
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			d += direct()
			p += proxied()
		} else {
			p += proxied()
			d += direct()
		}
	}
	n := float64(b.N) * work
	dr, pr := n/d.Seconds(), n/p.Seconds()
	b.ReportMetric(dr, "direct-"+unit)
	b.ReportMetric(pr, "proxied-"+unit)
	b.ReportMetric(pr/dr, "proxied/direct")
}

// BenchmarkHTTP: small keep-alive GETs, direct to the app and through
// HTTPProxy.
func BenchmarkHTTP(b *testing.B) {
	app := benchApp(b)
	set := NewSet(SetOptions{})
	mustSet(b, set, Backend{ID: "app", Network: "tcp", Addr: app, Weight: 100})
	_, addr := startHTTP(b, set, HTTPOptions{})
	d, p := newBatcher(b, app), newBatcher(b, addr)
	compare(b, "req/s", benchBatch, func() time.Duration { return d.run(b) }, func() time.Duration { return p.run(b) })
}

// BenchmarkTCPRequests: the same HTTP load through TCPProxy (what
// `--proxy tcp` costs an HTTP app).
func BenchmarkTCPRequests(b *testing.B) {
	app := benchApp(b)
	set := NewSet(SetOptions{})
	mustSet(b, set, Backend{ID: "app", Network: "tcp", Addr: app, Weight: 100})
	_, addr := startTCP(b, set)
	d, p := newBatcher(b, app), newBatcher(b, addr)
	compare(b, "req/s", benchBatch, func() time.Duration { return d.run(b) }, func() time.Duration { return p.run(b) })
}

// BenchmarkTCPBulk: one connection's upload throughput (16 MiB batches in
// 64 KiB writes, each batch acknowledged by the app), direct and through
// TCPProxy.
func BenchmarkTCPBulk(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					if _, err := io.CopyN(io.Discard, c, bulkBatch); err != nil {
						return
					}
					if _, err := c.Write([]byte{1}); err != nil {
						return
					}
				}
			}()
		}
	}()
	set := NewSet(SetOptions{})
	mustSet(b, set, Backend{ID: "app", Network: "tcp", Addr: ln.Addr().String(), Weight: 100})
	_, addr := startTCP(b, set)
	chunk := make([]byte, 64<<10)
	upload := func(to string) func() time.Duration {
		c, err := net.Dial("tcp", to)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		ack := make([]byte, 1)
		return func() time.Duration {
			start := time.Now()
			for range bulkBatch / len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := io.ReadFull(c, ack); err != nil {
				b.Fatal(err)
			}
			return time.Since(start)
		}
	}
	compare(b, "MiB/s", bulkBatch/(1<<20), upload(ln.Addr().String()), upload(addr))
}
