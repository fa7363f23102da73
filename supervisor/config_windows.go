package supervisor

func (c *Config) checkGuard() error { return nil }

// proxySupported: proxy mode starts generations with private sockets by
// socket activation, which baton run on Windows does not do yet.
const proxySupported = false
