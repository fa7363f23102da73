package supervisor

func (c *Config) checkGuard() error { return nil }
