package sdnotify

// No systemd on Windows.
func monotonicUsec() int64 { return 0 }
