package main

import (
	"bytes"
	"fmt"
	"github.com/baton-go/baton/internal/fuzzseed"
	"github.com/baton-go/baton/internal/testenv"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The fuzz target's seeds are added with f.Add and checked in under
// testdata/fuzz/FuzzConfigFile/ (plain `go test` runs both). After changing
// the list, rewrite the files with
//
//	BATON_WRITE_CORPUS=1 go test -run '^FuzzConfigFile$' ./cmd/baton
func configSeeds() [][]byte {
	return [][]byte{
		[]byte("name = \"web\"\nlisten = [\"tcp://127.0.0.1:8080\", \"udp://:5353#dns\"]\nready-http = \"http://127.0.0.1:8080/healthz\"\ndrain-timeout = \"30s\"\nmax-draining = 4\nwatch-binary = true\ncommand = [\"./app\", \"-flag\"]\n"),
		[]byte("# comment\nname = 'web' # trailing\n\"ready-tcp\" = true\nlog-max-size = 1048576\ncommand = [\"./app\"]\n"),
		[]byte("name = \"x\"\nlisten = [\"tcp://127.0.0.1:1\"]\ndrain-timeuot = \"1s\"\n"),
		[]byte("name = \"x\"\n\nmax-draining = \"many\"\n"),
		[]byte("name = [\"x\"]\n"),
		[]byte("name = \"x\"\nlisten = [tcp\n"),
		[]byte("[ready-http]\npath = \"/\"\n"),
		[]byte("name = \"x\"\n[[listen]]\naddr = \"tcp://:1\"\n"),
		[]byte("ready.http = \"x\"\n"),
		[]byte("\"n\\u0061me\" = \"x\"\n\"drain-timeout\" = 5\n"),
		[]byte("name = \"\"\"\nmax-draining = 3\n\"\"\"\nmax-draining = \"x\"\n"),
		[]byte("command = []\n"),
		[]byte("command = [1, 2]\n"),
		[]byte("command = \"./app\"\n"),
		[]byte("config = \"other.toml\"\n"),
		[]byte("help = true\n"),
		[]byte("max-draining = 1e309\nlog-max-size = 9223372036854775807\nmax-restarts = -1\n"),
		[]byte("drain-timeout = 1979-05-27T07:32:00Z\n"),
		[]byte("probation = { a = 1 }\n"),
		[]byte("listen = [[\"a\"], {b = 2}]\n"),
		[]byte("ready-delay = nan\nready-timeout = -inf\n"),
		[]byte("name = \"x\"\nname = \"y\"\n"),
		[]byte("\xef\xbb\xbfname = \"x\"\r\nmax-draining = 2\r\n"),
		[]byte("name = \"\xff\"\n"),
		[]byte("a = " + strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + "\n"),
		[]byte(""),
		[]byte("="),
	}
}

var (
	decodeErrRE = regexp.MustCompile(`^(\d+):(\d+): `)
	keyErrRE    = regexp.MustCompile(`^(\d+): `)
)

// FuzzConfigFile: whatever the file holds, applyConfigFile sets flags or
// refuses it with its position (path:line: or path:line:column:, a line of
// the file), never a panic.
func FuzzConfigFile(f *testing.F) {
	seeds := configSeeds()
	fuzzseed.Add(f, fuzzseed.Bytes(seeds...)...)
	const path = "/etc/baton/web.toml" // never read: the fuzzer gives the contents
	f.Fuzz(func(t *testing.T, text []byte) {
		_, err := applyConfig(newRunCmd(), path, text)
		if err == nil {
			return
		}
		msg, ok := strings.CutPrefix(err.Error(), path+":")
		if !ok {
			t.Fatalf("refusal without the file's name: %v", err)
		}
		var line int
		if m := decodeErrRE.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
		} else if m := keyErrRE.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
		} else {
			t.Fatalf("refusal without a line: %v", err)
		}
		if lines := bytes.Count(text, []byte("\n")) + 1; line < 1 || line > lines {
			t.Fatalf("refusal names line %d of a file of %d lines: %v", line, lines, err)
		}
	})
}

// Keys in table headers, dotted and quoted keys are refused with their line
// (they were reported at line 0).
func TestConfigKeyLines(t *testing.T) {
	dir := testenv.TempDir(t)
	cases := []struct{ text, want string }{
		{"name = \"x\"\n\n[ready-http]\npath = \"/\"\n", `:3: bad value for ready-http`},
		{"name = \"x\"\n[[drain]]\n", `:2: unknown key "drain"`},
		{"name = \"x\"\nready.http = 1\n", `:2: unknown key "ready"`},
		{"name = \"x\"\n\"drain-timeuot\" = \"1s\"\n", `:2: unknown key "drain-timeuot"`},
		{"\"n\\u0061me\" = 1\n\"m\\u0061x-draining\" = \"many\"\n", `:2: bad value for max-draining`},
		{"text = \"\"\"\nmax-draining = 3\n\"\"\"\n", `:1: unknown key "text"`},
	}
	for i, c := range cases {
		path := filepath.Join(dir, fmt.Sprintf("%d.toml", i))
		if err := os.WriteFile(path, []byte(c.text), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := applyConfigFile(newRunCmd(), path)
		if err == nil || !strings.Contains(err.Error(), path+c.want) {
			t.Errorf("%q: err = %v, want %q", c.text, err, path+c.want)
		}
	}
}
