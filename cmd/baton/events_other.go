//go:build !windows

package main

import "github.com/baton-go/baton/internal/ctl"

// eventsDirs are the runtime directories where the events of the service
// name may be kept: where its control endpoint is (ctl.Dir), for the
// library and baton run alike.
func eventsDirs(string) []string { return []string{ctl.Dir()} }
