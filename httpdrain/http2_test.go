package httpdrain_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/baton-go/baton/httpdrain"
)

// TestHTTP2TwoPhaseGoAway: a request a client sends on an HTTP/2
// connection before it has seen the drain's GOAWAY is served. With
// net/http's single GOAWAY (last stream id = the highest read so far) it
// is discarded: the client sends it right after the GOAWAY, as a client
// whose request crossed the GOAWAY on the wire would have, and the server
// closes the connection without an answer.
func TestHTTP2TwoPhaseGoAway(t *testing.T) {
	for _, mode := range []string{"h2c", "tls"} {
		t.Run(mode, func(t *testing.T) { testTwoPhaseGoAway(t, mode) })
	}
}

func testTwoPhaseGoAway(t *testing.T, mode string) {
	entered, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "unblocked")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s tls=%t", r.Proto, r.TLS != nil)
	})
	srv := &http.Server{Handler: mux}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var ts *testServer
	var c net.Conn
	scheme := "http"
	switch mode {
	case "h2c":
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		ts = serveOn(t, srv, httpdrain.Options{IdleGrace: longGrace}, ln)
		c, err = net.Dial("tcp", ts.addr)
	case "tls":
		cert, pool := testCert(t)
		ts = serveOn(t, srv, httpdrain.Options{IdleGrace: longGrace},
			tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}))
		var tc *tls.Conn
		tc, err = tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"h2"}})
		if err == nil && tc.ConnectionState().NegotiatedProtocol != "h2" {
			t.Fatalf("ALPN: %q", tc.ConnectionState().NegotiatedProtocol)
		}
		c, scheme = tc, "https"
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * testTimeout)) // never hang a test
	h2 := &h2Client{c: c, br: bufio.NewReader(c), scheme: scheme}
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	h2.write(t, 0x4, 0, 0, nil) // SETTINGS
	h2.request(t, 1, "/block")
	<-entered

	type result struct {
		rep httpdrain.Report
		err error
	}
	drained := make(chan result, 1)
	go func() {
		rep, err := ts.Drain(ctxTimeout(t, 2*testTimeout))
		drained <- result{rep, err}
	}()
	waitFor(t, "Draining", ts.Draining)
	close(release)

	var firstGoAway, lastGoAway uint32
	goAways := 0
	answered := map[uint32]string{}
	for answered[3] == "" || answered[1] == "" {
		typ, flags, stream, payload, err := h2.read()
		if err != nil {
			t.Fatalf("connection ended with stream 3 unanswered (first GOAWAY's last stream id %d): %v", firstGoAway, err)
		}
		switch typ {
		case 0x4: // SETTINGS
			if flags&0x1 == 0 {
				h2.write(t, 0x4, 0x1, 0, nil)
			}
		case 0x6: // PING
			if flags&0x1 == 0 {
				h2.write(t, 0x6, 0x1, 0, payload)
			}
		case 0x7: // GOAWAY
			last := binary.BigEndian.Uint32(payload) & 0x7fffffff
			if code := binary.BigEndian.Uint32(payload[4:]); code != 0 {
				t.Fatalf("GOAWAY with error code %d", code)
			}
			goAways++
			lastGoAway = last
			if goAways == 1 {
				firstGoAway = last
				// A request that crossed the GOAWAY on the wire.
				h2.request(t, 3, "/")
			}
		case 0x0: // DATA
			if stream == 1 || stream == 3 {
				h2.body[stream] += string(payload)
				if flags&0x1 != 0 {
					answered[stream] = h2.body[stream]
				}
			}
		}
	}
	if firstGoAway != 1<<31-1 {
		t.Errorf("first GOAWAY's last stream id %d, want 2^31-1", firstGoAway)
	}
	want := "HTTP/2.0 tls=" + fmt.Sprint(mode == "tls")
	if answered[3] != want || answered[1] != "unblocked" {
		t.Errorf("answers %q, want stream 1 %q, stream 3 %q", answered, "unblocked", want)
	}
	if goAways > 1 && lastGoAway < 3 {
		t.Errorf("final GOAWAY's last stream id %d refuses stream 3", lastGoAway)
	}
	c.Close() // the drain ends when the last conn is gone
	r := <-drained
	checkClean(t, r.rep, r.err)
	if r.rep.HTTP2GoAways != 1 || r.rep.HTTP2Unacked != 0 {
		t.Errorf("report: %d two-phase GOAWAYs, %d unacknowledged; want 1, 0", r.rep.HTTP2GoAways, r.rep.HTTP2Unacked)
	}
}

// h2Client speaks just enough HTTP/2 to send GET requests and read frames.
type h2Client struct {
	c      net.Conn
	br     *bufio.Reader
	scheme string
	body   map[uint32]string
}

func (h *h2Client) write(t *testing.T, typ, flags byte, stream uint32, payload []byte) {
	t.Helper()
	hdr := []byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), typ, flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[5:], stream)
	if _, err := h.c.Write(append(hdr, payload...)); err != nil {
		t.Fatalf("writing frame type %d: %v", typ, err)
	}
}

// request sends GET path on stream, its header block HPACK-encoded
// without the dynamic table or Huffman coding.
func (h *h2Client) request(t *testing.T, stream uint32, path string) {
	t.Helper()
	block := []byte{0x82} // :method GET
	if h.scheme == "https" {
		block = append(block, 0x87)
	} else {
		block = append(block, 0x86)
	}
	block = append(block, 0x04, byte(len(path))) // :path, literal value
	block = append(block, path...)
	block = append(block, 0x01, 4) // :authority
	block = append(block, "test"...)
	h.write(t, 0x1, 0x4|0x1, stream, block) // HEADERS, END_HEADERS|END_STREAM
}

func (h *h2Client) read() (typ, flags byte, stream uint32, payload []byte, err error) {
	var hdr [9]byte
	if _, err = io.ReadFull(h.br, hdr[:]); err != nil {
		return
	}
	n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
	payload = make([]byte, n)
	if _, err = io.ReadFull(h.br, payload); err != nil {
		return
	}
	if h.body == nil {
		h.body = map[uint32]string{}
	}
	return hdr[3], hdr[4], binary.BigEndian.Uint32(hdr[5:]) & 0x7fffffff, payload, nil
}

// testCert returns a fresh self-signed certificate for localhost and a
// pool that trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
		DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
