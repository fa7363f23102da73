package proctest

import "testing"

// TestTrackIgnoresUnsetPID: an unset pid (0, or -1 from a failed lookup)
// is never tracked, so a clean-up that kills what is still live never
// signals pid 0 (the caller's process group) or -1 (every process).
func TestTrackIgnoresUnsetPID(t *testing.T) {
	tr := NewTracker()
	defer tr.Close()
	tr.Track(0)
	tr.Track(-1)
	if live := tr.Live(); len(live) != 0 {
		t.Fatalf("tracked %v: unset pids must not be tracked", live)
	}
}
