package ctl

import (
	"bufio"
	"bytes"
	"encoding/json"
	"github.com/baton-go/baton/internal/fuzzseed"
	"strings"
	"testing"
)

// addSeeds: the seeds of a target, as internal/fuzzseed checks them in.
func addSeeds(f *testing.F, seeds [][]byte) { fuzzseed.Add(f, fuzzseed.Bytes(seeds...)...) }

// controlSeeds: valid requests and responses, and the malformed ones a
// confused or hostile peer sends.
func controlSeeds() [][]byte {
	return [][]byte{
		[]byte(`{"baton":1,"op":"status"}` + "\n"),
		[]byte(`{"baton":1,"op":"upgrade","binary":"/srv/app.new","expect_sha256":"` + strings.Repeat("ab", 32) + `"}` + "\n"),
		[]byte(`{"baton":1,"op":"logs","since":-100}` + "\n"),
		[]byte(`{"baton":1,"op":"stop"}`), // no newline: EOF ends the line
		[]byte(`{"baton":1,"ok":true,"result":{"pid":42,"generation":3,"binary":"/srv/app","ready_after_ns":1500000}}` + "\n"),
		[]byte(`{"baton":1,"ok":false,"code":"child_exited","error":"exit 3","result":{"pid":7,"exit_code":3,"stderr_tail":"boom"}}` + "\n"),
		[]byte(`{"baton":2,"op":"status"}` + "\n"),
		[]byte(`{"baton":"1","op":7}` + "\n"),
		[]byte(`{"baton":1,"op":"status"` + "\n"),
		[]byte(`{"baton":1e999,"since":99999999999999999999999}` + "\n"),
		[]byte(`{"result":{"a":` + strings.Repeat("[", 5000) + "\n"),
		[]byte("\n"),
		[]byte(""),
		[]byte("null\n"),
		[]byte(`"status"` + "\n"),
		[]byte("{\"op\":\"\xff\xfe\"}\n"),
		[]byte("\r\n{\"baton\":1}\n"),
		[]byte(`{"baton":1,"op":"status"}{"baton":1,"op":"stop"}` + "\n"),
		[]byte(`{"baton":1,"op":"status"}` + "\n" + `{"baton":1,"op":"stop"}` + "\n"),
		[]byte(`{"baton":1,"op":"status","op":"stop","OP":"upgrade"}` + "\n"),
		[]byte("\x00\x00\x00\x10{\"baton\":1}"),
	}
}

// FuzzReadLine: a request or response line of any content is decoded or
// refused with an error, never a panic; a decoded one survives a round
// trip through writeLine; nothing longer than maxLine is accepted.
func FuzzReadLine(f *testing.F) {
	addSeeds(f, controlSeeds())
	f.Fuzz(func(t *testing.T, b []byte) {
		var req Request
		if err := readLine(bufio.NewReader(bytes.NewReader(b)), &req); err == nil {
			line, _, _ := bytes.Cut(b, []byte("\n"))
			if len(line) > maxLine+1 { // +1: a \r the reader drops
				t.Fatalf("accepted a line of %d bytes", len(line))
			}
			var buf bytes.Buffer
			if err := writeLine(&buf, req); err != nil {
				t.Fatalf("writeLine of a decoded request: %v", err)
			}
			var again Request
			if err := readLine(bufio.NewReader(&buf), &again); err != nil || again != req {
				t.Fatalf("round trip: %+v -> %+v (%v)", req, again, err)
			}
		}
		var resp Response
		if err := readLine(bufio.NewReader(bytes.NewReader(b)), &resp); err == nil {
			var buf bytes.Buffer
			if err := writeLine(&buf, resp); err != nil {
				t.Fatalf("writeLine of a decoded response: %v", err)
			}
			var again Response
			if err := readLine(bufio.NewReader(&buf), &again); err != nil {
				t.Fatalf("round trip of %+v: %v", resp, err)
			}
			if again.Version != resp.Version || again.OK != resp.OK || again.Code != resp.Code || again.Error != resp.Error {
				t.Fatalf("round trip: %+v -> %+v", resp, again)
			}
			var v any
			_ = resp.Decode(&v)
			if len(resp.Result) > 0 && !json.Valid(resp.Result) {
				t.Fatalf("decoded an invalid result %q", resp.Result)
			}
		}
	})
}
