package httpdrain

import (
	"math/rand/v2"
	"net/http"
	"testing"
)

// TestFrameCursorSplits: frame boundaries and a PING ACK's payload are
// found however the byte stream is cut into reads or writes.
func TestFrameCursorSplits(t *testing.T) {
	frame := func(typ, flags byte, payload []byte) []byte {
		n := len(payload)
		return append([]byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags, 0, 0, 0, 0}, payload...)
	}
	var stream []byte
	var ends []int // offsets where a frame ends
	add := func(f []byte) {
		stream = append(stream, f...)
		ends = append(ends, len(stream))
	}
	add(frame(0x4, 0, make([]byte, 30)))                 // SETTINGS
	add(frame(0x4, flagAck, nil))                        // SETTINGS ACK, empty
	add(frame(0x0, 0, make([]byte, 70000)))              // DATA larger than a 64 KiB read
	add(frame(framePing, flagAck, []byte("someping")))   // another PING ACK
	add(frame(framePing, 0, pingData[:]))                // our data, not an ACK
	add(frame(framePing, flagAck, pingData[:]))          // ours
	add(frame(0x1, 0x4, []byte{0x82, 0x86, 0x84, 0x01})) // HEADERS
	isEnd := map[int]bool{}
	for _, e := range ends {
		isEnd[e] = true
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		hc := &h2Conn{s: New(&http.Server{}, Options{})}
		var cur frameCursor
		acked := 0
		for off := 0; off < len(stream); {
			n := 1 + rng.IntN(20)
			if round%2 == 1 {
				n = 1 + rng.IntN(70000)
			}
			n = min(n, len(stream)-off)
			cur.advance(stream[off:off+n], func(hdr *[frameHeaderLen]byte, b []byte, last bool) {
				hc.watchPing(hdr, b, last)
				if last && hc.acked.Swap(false) {
					acked++
				}
			})
			off += n
			if cur.atBoundary() != isEnd[off] {
				t.Fatalf("round %d: at %d atBoundary %v, want %v", round, off, cur.atBoundary(), isEnd[off])
			}
		}
		if acked != 1 {
			t.Fatalf("round %d: our PING ACK seen %d times, want once", round, acked)
		}
	}
}
