package main

import (
	"os"
	"strings"
	"testing"
)

// baton service install refuses --metrics and --http-control (the service
// would refuse to start with them) before it registers anything, even
// with --dry-run, and says which flag: exit 2. Without them the same
// command line is accepted.
func TestServiceInstallRefusesUnservedFlags(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	install := []string{"service", "install", "--name", "batonrefused", "--listen", "tcp://127.0.0.1:8080", "--dry-run"}
	for _, c := range []struct{ flags []string }{
		{[]string{"--metrics", "127.0.0.1:9464"}},
		{[]string{"--http-control", "127.0.0.1:9465", "--http-control-token-file", `C:\token`}},
	} {
		args := append(append(append([]string(nil), install...), c.flags...), "--", exe)
		code, out, errOut := runCLI(t, args...)
		if code != exitUsage || !strings.Contains(errOut, c.flags[0]) || !strings.Contains(errOut, "does not serve") || out != "" {
			t.Errorf("%s: exit %d (want %d), stdout %q, stderr %q", strings.Join(c.flags, " "), code, exitUsage, out, errOut)
		}
	}
	code, out, errOut := runCLI(t, append(install, "--", exe)...)
	if code != 0 || !strings.Contains(out, "run --as-service --name=batonrefused") {
		t.Errorf("without them: exit %d: %s%s", code, out, errOut)
	}
}
