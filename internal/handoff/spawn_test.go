package handoff

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as a new generation that fails at start-up.
func TestMain(m *testing.M) {
	if os.Getenv("BATON_HANDOFF_TEST_CHILD") == "exit" {
		fmt.Fprintln(os.Stderr, "child: boom: configuration invalid")
		os.Exit(3)
	}
	os.Exit(m.Run())
}

// A new generation that exits before it is ready is reported with its
// exit code and the end of its stderr (real process, real pipes).
func TestSpawnExitBeforeReady(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := append(os.Environ(), "BATON_HANDOFF_TEST_CHILD=exit")
	c, err := Spawn(ctx, SpawnConfig{Binary: exe, Args: []string{"-test.run=NONE"}, Env: env})
	if err == nil {
		_, err = c.WaitReady(ctx)
	}
	var ee *ExitError
	if !errors.As(err, &ee) || !errors.Is(err, ErrChildExited) {
		t.Fatalf("err = %v, want an *ExitError", err)
	}
	if ee.ExitCode != 3 || !strings.Contains(ee.StderrTail, "child: boom: configuration invalid") {
		t.Fatalf("exit %d, stderr tail %q: want 3 and the child's message", ee.ExitCode, ee.StderrTail)
	}
}

func TestSpawnMissingBinary(t *testing.T) {
	_, err := Spawn(context.Background(), SpawnConfig{Binary: "/nonexistent/app"})
	if !errors.Is(err, ErrBinary) {
		t.Fatalf("err = %v, want ErrBinary", err)
	}
}
