package proxy

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
)

// Parsing for the fast path. The request parser is strict on purpose:
// whatever it does not take plainly goes to net/http, which then answers
// exactly as before (including 400 for malformed requests).

// tokenChar marks RFC 9110 token characters.
var tokenChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// pathChar marks characters net/url keeps as they are in a path, so the
// target is sent on byte for byte as net/http would send it.
var pathChar = func() (t [256]bool) {
	for c := range 256 {
		t[c] = tokenChar[c]
	}
	for _, c := range "()/,;=:@[]" {
		t[c] = true
	}
	for _, c := range "^`|" { // tokens url escapes in paths
		t[c] = false
	}
	return t
}()

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// validTarget accepts an origin-form target ("/path?query") whose bytes
// net/http would forward unchanged.
func validTarget(t []byte) bool {
	if len(t) == 0 || t[0] != '/' || len(t) > 1 && t[1] == '/' {
		return false
	}
	path, query, _ := bytes.Cut(t, []byte{'?'})
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c == '%' {
			if i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2]) {
				return false
			}
			i += 2
			continue
		}
		if !pathChar[c] {
			return false
		}
	}
	for _, c := range query {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

func validValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// validHost accepts the characters of a host[:port] (reg-name, IPv4, or
// IPv6 in brackets).
func validHost(h []byte) bool {
	if len(h) == 0 {
		return false
	}
	for _, c := range h {
		if !tokenChar[c] && c != ':' && c != '[' && c != ']' {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte { return bytes.Trim(b, " \t") }

func eqFold(b []byte, s string) bool { return len(b) == len(s) && strings.EqualFold(string(b), s) }

// parseRequest parses a request head (ending with its empty line) and
// builds cc.out, the head sent to backends. false: not for the fast path.
func (cc *clientConn) parseRequest(head []byte, ri *reqInfo) bool {
	p := cc.p
	ri.headLen = len(head)
	ri.contentLength = 0
	line, rest, _ := bytes.Cut(head, crlf)
	method, line, ok1 := bytes.Cut(line, []byte{' '})
	target, proto, ok2 := bytes.Cut(line, []byte{' '})
	if !ok1 || !ok2 || len(method) == 0 || string(proto) != "HTTP/1.1" || !validTarget(target) {
		return false
	}
	for _, c := range method {
		if !tokenChar[c] {
			return false
		}
	}
	switch string(method) {
	case "CONNECT", "PRI":
		return false
	case http.MethodGet, http.MethodOptions, http.MethodTrace:
		ri.idempotent = true
	case http.MethodHead:
		ri.idempotent, ri.isHead = true, true
	}
	out := append(cc.out[:0], head[:len(method)+len(target)+len(proto)+2]...)
	out = append(out, crlf...)

	var host []byte
	var priorXFF, priorFwd [][]byte
	haveLength := false
	for len(rest) > 2 {
		var hl []byte
		hl, rest, _ = bytes.Cut(rest, crlf)
		name, value, ok := bytes.Cut(hl, []byte{':'})
		if !ok || len(name) == 0 {
			return false
		}
		for _, c := range name {
			if !tokenChar[c] {
				return false // also obsolete line folding
			}
		}
		value = trimOWS(value)
		if !validValue(value) {
			return false
		}
		switch {
		case eqFold(name, "Host"):
			if host != nil || !validHost(value) {
				return false
			}
			host = value
		case eqFold(name, "Content-Length"):
			if haveLength || len(value) == 0 || len(value) > 18 {
				return false
			}
			var n int64
			for _, c := range value {
				if c < '0' || c > '9' {
					return false
				}
				n = n*10 + int64(c-'0')
			}
			if n > fastBodyMax {
				return false
			}
			haveLength = true
			ri.contentLength = n
		case eqFold(name, "Connection"):
			for tok := range bytes.SplitSeq(value, []byte{','}) {
				tok = trimOWS(tok)
				switch {
				case eqFold(tok, "close"):
					ri.close = true
				case eqFold(tok, "keep-alive"), len(tok) == 0:
				default:
					return false // names other hop-by-hop headers, or upgrades
				}
			}
			continue
		case eqFold(name, "Transfer-Encoding"), eqFold(name, "TE"), eqFold(name, "Trailer"),
			eqFold(name, "Upgrade"), eqFold(name, "Expect"):
			return false
		case eqFold(name, "Keep-Alive"), eqFold(name, "Proxy-Connection"),
			eqFold(name, "Proxy-Authorization"), eqFold(name, "Proxy-Authenticate"),
			eqFold(name, "X-Forwarded-Host"), eqFold(name, "X-Forwarded-Proto"):
			continue // hop-by-hop, or replaced below
		case eqFold(name, "X-Forwarded-For"):
			priorXFF = append(priorXFF, value)
			continue
		case eqFold(name, "Forwarded"):
			priorFwd = append(priorFwd, value)
			continue
		case p.opts.Sticky && eqFold(name, "Cookie") && bytes.Contains(value, []byte(p.opts.StickyCookie)):
			h := http.Header{"Cookie": {string(value)}}
			if v := takeCookie(h, p.opts.StickyCookie); v != "" {
				ri.want = v
			}
			if kept := h.Get("Cookie"); kept != "" {
				out = append(out, "Cookie: "...)
				out = append(out, kept...)
				out = append(out, crlf...)
			}
			continue
		}
		out = append(out, hl...)
		out = append(out, crlf...)
	}
	if host == nil {
		return false
	}
	// The forwarded headers, as rewrite sets them.
	if cc.xff != "" {
		out = append(out, "X-Forwarded-For: "...)
		if p.opts.TrustForwarded {
			for _, v := range priorXFF {
				out = append(out, v...)
				out = append(out, ", "...)
			}
		}
		out = append(out, cc.xff...)
		out = append(out, crlf...)
	}
	out = append(out, "X-Forwarded-Host: "...)
	out = append(out, host...)
	out = append(out, "\r\nX-Forwarded-Proto: http\r\nForwarded: "...)
	if p.opts.TrustForwarded {
		for _, v := range priorFwd {
			out = append(out, v...)
			out = append(out, ", "...)
		}
	}
	out = append(out, cc.fwdFor...)
	out = append(out, ";host="...)
	out = appendQuoteIfNeeded(out, host)
	out = append(out, ";proto=http\r\n\r\n"...)
	cc.out = out
	cc.names = append(append(cc.names[:0], method...), target...)
	ri.method, ri.target = cc.names[:len(method)], cc.names[len(method):]
	return true
}

// respHead is what relaying needs to know about an answer's head.
type respHead struct {
	code          int
	contentLength int64 // -1: none
	chunked       bool
	close         bool // the backend closes the connection after it
	doubtful      bool // framed, but not plainly (both Content-Length and chunked): not pooled after
	hasDate       bool
	hasType       bool
	hasEncoding   bool
}

// readAnswerHead reads the backend's answer head into cc.resp (the head
// for the client without hop-by-hop headers and its final empty line).
// Informational answers (1xx but 101) are passed to the client at once,
// up to maxInformational of them.
func (cc *clientConn) readAnswerHead(bc *backendConn, ri *reqInfo, rh *respHead) error {
	for range maxInformational + 1 {
		*rh = respHead{contentLength: -1}
		if err := cc.readOneHead(bc, rh); err != nil {
			return err
		}
		if rh.code >= 200 {
			return nil
		}
		if rh.code == http.StatusSwitchingProtocols {
			return fmt.Errorf("%w: 101 to a request without Upgrade", errBadAnswer)
		}
		_, _ = cc.bw.Write(cc.resp)
		_, _ = cc.bw.Write(crlf)
		if err := cc.bw.Flush(); err != nil {
			return fmt.Errorf("%w: %w", errClientWrite, err)
		}
	}
	return fmt.Errorf("%w: over %d informational answers", errBadAnswer, maxInformational)
}

// validHeaderLine splits a header field line and checks its syntax:
// a token name, no white space before the colon (nor obsolete line
// folding), a value without control characters but HTAB.
func validHeaderLine(hl []byte) (name, value []byte, ok bool) {
	name, value, ok = bytes.Cut(hl, []byte{':'})
	if !ok || len(name) == 0 {
		return nil, nil, false
	}
	for _, c := range name {
		if !tokenChar[c] {
			return nil, nil, false
		}
	}
	value = trimOWS(value)
	return name, value, validValue(value)
}

func (cc *clientConn) readOneHead(bc *backendConn, rh *respHead) error {
	line, err := bc.readLine()
	if err != nil {
		return err
	}
	proto, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok || len(rest) < 3 || (string(proto) != "HTTP/1.1" && string(proto) != "HTTP/1.0") ||
		len(rest) > 3 && rest[3] != ' ' {
		return fmt.Errorf("%w: status line %q", errBadAnswer, line)
	}
	code := 0
	for _, c := range rest[:3] {
		if c < '0' || c > '9' {
			return fmt.Errorf("%w: status line %q", errBadAnswer, line)
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 || len(rest) > 3 && !validValue(rest[4:]) {
		return fmt.Errorf("%w: status line %q", errBadAnswer, line)
	}
	rh.code = code
	is10 := string(proto) == "HTTP/1.0"
	keepAlive10 := false
	out := append(cc.resp[:0], "HTTP/1.1 "...)
	out = append(out, rest...)
	out = append(out, crlf...)
	cc.dropped = cc.dropped[:0]
	total := len(line)
	for {
		hl, err := bc.readLine()
		if err != nil {
			return err
		}
		if total += len(hl); total > maxRespHead {
			return fmt.Errorf("%w: head over %d bytes", errBadAnswer, maxRespHead)
		}
		if len(hl) == 0 {
			break
		}
		name, value, ok := validHeaderLine(hl)
		if !ok {
			return fmt.Errorf("%w: header line %q", errBadAnswer, hl)
		}
		switch {
		case eqFold(name, "Content-Length"):
			var n int64
			if len(value) == 0 || len(value) > 18 {
				return fmt.Errorf("%w: Content-Length %q", errBadAnswer, value)
			}
			for _, c := range value {
				if c < '0' || c > '9' {
					return fmt.Errorf("%w: Content-Length %q", errBadAnswer, value)
				}
				n = n*10 + int64(c-'0')
			}
			if rh.contentLength >= 0 {
				if rh.contentLength != n {
					return fmt.Errorf("%w: two Content-Lengths", errBadAnswer)
				}
				continue // the same again: passed on once
			}
			rh.contentLength = n
		case eqFold(name, "Transfer-Encoding"):
			if !eqFold(value, "chunked") || rh.chunked {
				return fmt.Errorf("%w: Transfer-Encoding %q", errBadAnswer, value)
			}
			rh.chunked = true
			continue
		case eqFold(name, "Connection"):
			for tok := range bytes.SplitSeq(value, []byte{','}) {
				tok = trimOWS(tok)
				switch {
				case eqFold(tok, "close"):
					rh.close = true
				case eqFold(tok, "keep-alive"):
					keepAlive10 = true
				case eqFold(tok, "Content-Length"), eqFold(tok, "Transfer-Encoding"):
					// Framing is never hop-by-hop here: dropping it
					// would leave the relayed answer without an end.
				case len(tok) > 0:
					cc.dropped = append(cc.dropped, string(tok))
				}
			}
			continue
		case eqFold(name, "Keep-Alive"), eqFold(name, "Proxy-Connection"), eqFold(name, "Proxy-Authenticate"),
			eqFold(name, "TE"), eqFold(name, "Upgrade"):
			continue
		case eqFold(name, "Date"):
			rh.hasDate = true
		case eqFold(name, "Content-Type"):
			rh.hasType = true
		case eqFold(name, "Content-Encoding"):
			rh.hasEncoding = rh.hasEncoding || len(value) > 0
		}
		out = append(out, name...)
		out = append(out, ": "...)
		out = append(out, value...)
		out = append(out, crlf...)
	}
	if is10 && !keepAlive10 {
		rh.close = true
	}
	if rh.chunked && rh.contentLength >= 0 {
		// Chunked wins and the length is not passed on (RFC 9112 6.3);
		// such an answer may be an attempt at smuggling: its connection
		// is not used again.
		out = dropHeader(out, "Content-Length")
		rh.contentLength = -1
		rh.doubtful = true
	}
	for _, name := range cc.dropped {
		out = dropHeader(out, name)
		switch {
		case eqFold([]byte(name), "Date"):
			rh.hasDate = false
		case eqFold([]byte(name), "Content-Type"):
			rh.hasType = false
		case eqFold([]byte(name), "Content-Encoding"):
			rh.hasEncoding = false
		}
	}
	cc.resp = out
	return nil
}

// dropHeader removes the header lines called name from a head.
func dropHeader(head []byte, name string) []byte {
	first, rest, _ := bytes.Cut(head, crlf)
	out := append(make([]byte, 0, len(head)), first...)
	out = append(out, crlf...)
	for len(rest) > 0 {
		var hl []byte
		hl, rest, _ = bytes.Cut(rest, crlf)
		if n, _, _ := bytes.Cut(hl, []byte{':'}); eqFold(n, name) {
			continue
		}
		out = append(out, hl...)
		out = append(out, crlf...)
	}
	return out
}
