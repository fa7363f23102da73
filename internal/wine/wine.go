// Package wine tells whether this Windows program runs under Wine, so that
// the few checks Wine cannot support (UDP sockets with Go >= 1.26, the std
// FileListener path, timings) are skipped there, and only there, with the
// reason printed.
package wine
