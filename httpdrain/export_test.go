package httpdrain

// PendingBytes is, for tests, how many bytes of next requests the server
// has read on its idle connections (a header split across segments).
func (s *Server) PendingBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for c := range s.conns {
		if m, ok := c.(*migratedConn); ok {
			m.mu.Lock()
			n += m.read - m.idleRead
			m.mu.Unlock()
		}
	}
	return n
}
