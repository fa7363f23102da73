package handoff

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"
)

func TestHandoffRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	in := Handoff{Generation: 7, Parent: Proc{PID: 42, Start: 9}, Binary: "/srv/app",
		Files:    []FileDesc{{Kind: KindListener, Network: "tcp", Addr: "127.0.0.1:80"}, {Kind: KindFile, Name: "log"}},
		Draining: []Proc{{PID: 41}}}
	state := []byte("counter=12")
	if err := WriteHandoff(&buf, in, state); err != nil {
		t.Fatal(err)
	}
	out, gotState, err := ReadHandoff(&buf, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if out.Version != Version || out.Generation != 7 || out.Parent.PID != 42 || len(out.Files) != 2 || out.Files[1].Name != "log" || out.Draining[0].PID != 41 {
		t.Fatalf("round trip changed the message: %+v", out)
	}
	if string(gotState) != string(state) {
		t.Fatalf("state %q, want %q", gotState, state)
	}
}

func TestHandoffRefusals(t *testing.T) {
	write := func(state []byte) []byte {
		var buf bytes.Buffer
		if err := WriteHandoff(&buf, Handoff{Generation: 2}, state); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	frame := func(s string) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...) }
	corrupt := write([]byte("0123456789"))
	corrupt[len(corrupt)-1] ^= 1
	cases := []struct {
		name     string
		msg      []byte
		maxState int64
		want     error
	}{
		{"too large for this generation", write(make([]byte, 100)), 99, ErrStateTooLarge},
		{"corrupt", corrupt, 1 << 20, ErrStateCorrupt},
		{"truncated blob", func() []byte { b := write(make([]byte, 100)); return b[:len(b)-50] }(), 1 << 20, ErrStateCorrupt},
		{"negative length", frame(`{"v":1,"state_len":-1}`), 1 << 20, ErrStateTooLarge},
		{"future version", frame(`{"v":2}`), 1 << 20, ErrVersion},
		{"no version", frame(`{}`), 1 << 20, ErrVersion},
	}
	for _, c := range cases {
		_, _, err := ReadHandoff(bytes.NewReader(c.msg), c.maxState)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	// A frame header announcing more than the frame limit is refused
	// before anything is allocated.
	if _, _, err := ReadHandoff(bytes.NewReader(binary.BigEndian.AppendUint32(nil, 1<<31)), 0); err == nil {
		t.Error("a 2 GiB frame was not refused")
	}
}

func TestExitErrorIsChildExited(t *testing.T) {
	var err error = &ExitError{PID: 5, ExitCode: 3, StderrTail: "boom"}
	if !errors.Is(err, ErrChildExited) || Code(err) != "child_exited" {
		t.Fatalf("ExitError does not match ErrChildExited: %v", err)
	}
}

func TestCleanEnv(t *testing.T) {
	got := cleanEnv([]string{"A=1", "LISTEN_PID=3", "LISTEN_FDS=1", "LISTEN_FDNAMES=x", EnvChannel + "=3", "NOTIFY_SOCKET=/run/n"})
	if len(got) != 2 || got[0] != "A=1" || got[1] != "NOTIFY_SOCKET=/run/n" {
		t.Fatalf("cleanEnv = %v", got)
	}
}

// FuzzReadHandoff: no input makes the reader panic or accept a blob that
// does not match its checksum.
func FuzzReadHandoff(f *testing.F) {
	addSeeds(f, handoffSeeds())
	f.Fuzz(func(t *testing.T, b []byte) {
		h, state, err := ReadHandoff(bytes.NewReader(b), 1<<16)
		if err == nil && int64(len(state)) != h.StateLen {
			t.Fatalf("accepted a state of %d bytes announced as %d", len(state), h.StateLen)
		}
		if err == nil && h.Version != Version {
			t.Fatalf("accepted version %d", h.Version)
		}
	})
}

func TestReadHandoffDoesNotTrustTheAnnouncedSize(t *testing.T) {
	var buf bytes.Buffer
	if err := writeJSON(&buf, Handoff{Version: Version, StateLen: 1 << 30, StateSHA256: strings.Repeat("0", 64)}); err != nil {
		t.Fatal(err)
	}
	buf.WriteString("short")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := ReadHandoff(&buf, 1<<30)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrStateCorrupt) {
		t.Fatalf("a truncated state: %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Fatalf("reading 5 bytes of an announced 1 GiB state allocated %d MiB", grew>>20)
	}
}
