//go:build !linux

package sockstat

import (
	"errors"
	"os"
	"testing"
)

func TestUnsupported(t *testing.T) {
	if _, err := Conns(os.Getpid(), []int{80}, nil); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Conns: %v, want ErrUnsupported", err)
	}
}
