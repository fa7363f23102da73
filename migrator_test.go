package baton

import "github.com/baton-go/baton/httpdrain"

// baton's listeners are what an HTTP drain passes idle connections to: a
// change of either side's signature must not silently turn migration off.
var _ httpdrain.Migrator = (*gatedListener)(nil)
