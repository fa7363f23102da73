// Package handlecount counts the open file descriptors (Unix) or handles
// (Windows) of the current process: a figure that must stay flat across
// upgrades, reported by `baton status` and checked by the tests.
package handlecount
