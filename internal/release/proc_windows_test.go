package release

import "testing"

func waitGone(t *testing.T, pid int) {}
