//go:build !race

package grpcdrain_test

const raceEnabled = false
