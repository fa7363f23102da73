//go:build unix

package supervisor

import "fmt"

func (c *Config) checkGuard() error {
	if c.OrphanGuard == "" {
		c.OrphanGuard = defaultGuard
	}
	if c.OrphanGuard == GuardPdeathsig && defaultGuard != GuardPdeathsig {
		return fmt.Errorf("--orphan-guard pdeathsig is not available on this system; use watchdog")
	}
	if c.OrphanGuard != GuardPdeathsig && c.OrphanGuard != GuardWatchdog {
		return fmt.Errorf("--orphan-guard %q: use pdeathsig or watchdog", c.OrphanGuard)
	}
	return nil
}

// proxySupported: proxy mode gives each generation private sockets by
// socket activation (LISTEN_FDS) or a {port} placeholder.
const proxySupported = true
