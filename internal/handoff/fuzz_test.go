package handoff

import (
	"bytes"
	"encoding/binary"
	"errors"
	"github.com/baton-go/baton/internal/fuzzseed"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// addSeeds: the seeds of a target, as internal/fuzzseed checks them in.
func addSeeds(f *testing.F, seeds [][]byte) { fuzzseed.Add(f, fuzzseed.Bytes(seeds...)...) }

func frameOf(s string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...)
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// handoffSeeds: handoff messages as a parent (or the supervisor) writes
// them, and damaged ones.
func handoffSeeds() [][]byte {
	write := func(h Handoff, state []byte) []byte {
		var buf bytes.Buffer
		if err := WriteHandoff(&buf, h, state); err != nil {
			panic(err)
		}
		return buf.Bytes()
	}
	full := write(Handoff{Generation: 2, Parent: Proc{PID: 41, Start: 123456}, Binary: "/srv/app",
		Files: []FileDesc{
			{Kind: KindListener, Network: "tcp", Addr: "127.0.0.1:8080"},
			{Kind: KindPacket, Network: "udp", Addr: ":5353"},
			{Kind: KindFile, Name: "log", Data: []byte{1, 2, 3}},
		},
		Draining: []Proc{{PID: 40}}, StderrRelay: []uint64{0x1c4, 0x1c8}}, []byte("counter=12"))
	corrupt := bytes.Clone(full)
	corrupt[len(corrupt)-1] ^= 1
	return [][]byte{
		write(Handoff{Generation: 2, Files: []FileDesc{{Kind: KindListener, Network: "tcp", Addr: ":80"}}}, []byte("state")),
		write(Handoff{Generation: 1}, nil),
		full,
		corrupt,
		full[:len(full)-4],
		full[:10],
		{0, 0, 0, 2, '{', '}'},
		frameOf(`{"v":1,"state_len":-1}`),
		frameOf(`{"v":1,"state_len":1099511627776}`),
		frameOf(`{"v":1,"state_len":3,"state_sha256":"zz"}` + "abc"),
		frameOf(`{"v":2,"generation":3}`),
		frameOf(`{"v":1.5}`),
		frameOf(`{"v":1,"files":[{"kind":"listener"},null,7]}`),
		frameOf(`{"v":1,"files":{"kind":"x"}}`),
		frameOf(`{"v":1,"draining":[{"pid":-1,"start":18446744073709551615}]}`),
		frameOf(`{"v":1,"files":[{"kind":"file","data":"not base64!"}]}`),
		frameOf(`null`),
		frameOf(``),
		binary.BigEndian.AppendUint32(nil, 1<<20+1),
		binary.BigEndian.AppendUint32(nil, 0xffffffff),
		{0, 0, 0},
	}
}

// linkSeeds: frames of the supervisor link (hello, requests, replies) and
// damaged ones.
func linkSeeds() [][]byte {
	return [][]byte{
		frameOf(`{"v":1,"pid":4242}`),
		frameOf(`{"op":"handover"}`),
		frameOf(`{"op":"drain"}`),
		concat(frameOf(`{"op":"handover"}`), frameOf(`{"op":"drain"}`), frameOf(`{"op":"handover"}`)),
		frameOf(`{"ok":true}`),
		frameOf(`{"ok":false,"code":"state","error":"StateFunc: boom"}`),
		frameOf(`{"type":"ready","pid":7,"app_startup_ns":1500000}`),
		frameOf(`{"type":"refused","pid":7,"code":"protocol","reason":"version 2"}`),
		frameOf(`{"op":"reboot"}`),
		frameOf(`{"op":7}`),
		frameOf(`{"v":"1","pid":1e99}`),
		frameOf(`{"ok":"yes"}`),
		concat(frameOf(`{"op":"drain"}`), []byte{0, 0}),
		concat(frameOf(`{"op":"drain"}`), frameOf(`{"op":`)),
		frameOf(`[` + strings.Repeat(`[`, 10000)),
		frameOf("{\"op\":\"\xff\"}"),
		binary.BigEndian.AppendUint32(nil, 1<<20+1),
		binary.BigEndian.AppendUint32(nil, 0x7fffffff),
		{},
	}
}

// FuzzLinkFrames: every frame of the link and of the handoff channel's
// answers (LinkHello, LinkRequest, LinkReply, Reply, Ack) is decoded or
// refused, never a panic, never a frame above the limit.
func FuzzLinkFrames(f *testing.F) {
	addSeeds(f, linkSeeds())
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []any{&LinkHello{}, &LinkRequest{}, &LinkReply{}, &Reply{}, &Ack{}} {
			r := bytes.NewReader(b)
			if err := readJSON(r, v); err == nil && len(b)-r.Len() > maxFrame+4 {
				t.Fatalf("accepted a frame of %d bytes", len(b)-r.Len()-4)
			}
		}
		_, _ = ReadReply(bytes.NewReader(b))
	})
}

// FuzzLinkServe: a generation's end of the link answers whatever the
// other end sends with whole LinkReply frames, one per request it could
// read, and stops at the first frame it cannot: never a panic, never a
// half-written answer.
func FuzzLinkServe(f *testing.F) {
	addSeeds(f, linkSeeds())
	f.Fuzz(func(t *testing.T, b []byte) {
		c := &scriptConn{in: bytes.NewReader(b)}
		l := &LinkConn{c: c, peer: 1}
		drains := 0
		err := l.Serve(func() (*Handed, error) { return nil, errors.New("no state in this test") }, func() { drains++ }, nil)
		if err == nil {
			t.Fatal("Serve returned without an error")
		}
		replies := 0
		for out := bytes.NewReader(c.out.Bytes()); out.Len() > 0; replies++ {
			var rep LinkReply
			if err := readJSON(out, &rep); err != nil {
				t.Fatalf("answer %d is not a LinkReply: %v", replies, err)
			}
			if rep.OK == (rep.Code != "") {
				t.Fatalf("answer %d: %+v", replies, rep)
			}
		}
		if drains > replies {
			t.Fatalf("%d drains, %d answers", drains, replies)
		}
	})
}

// scriptConn is a net.Conn that reads a script and records what is written.
type scriptConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.in.Len() == 0 {
		return 0, io.EOF
	}
	return c.in.Read(p)
}
func (c *scriptConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.UnixAddr{Net: "unix"} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.UnixAddr{Net: "unix"} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }
