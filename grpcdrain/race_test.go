//go:build race

package grpcdrain_test

// raceEnabled: this test binary runs with the race detector; the
// end-to-end test builds its programs with -race too.
const raceEnabled = true
