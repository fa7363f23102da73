package baton

import "os"

// Windows has no signals to trigger an upgrade: the control endpoint and
// Upgrade are the triggers.
var defaultUpgradeSignal os.Signal = NoSignal
