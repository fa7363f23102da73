package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// backendConn is one connection to a backend used by the fast path.
type backendConn struct {
	c        net.Conn
	br       *bufio.Reader
	idleAt   time.Time
	received bool // some of an answer was read on it (for the retry rule)
	aw       *awaiter
}

func newBackendConn(c net.Conn) *backendConn {
	return &backendConn{c: c, br: bufio.NewReaderSize(sockReader(c), backendReadBuf), aw: newAwaiter(c)}
}

func (bc *backendConn) close() { _ = bc.c.Close() }

// readLine returns the next line of an answer head without its CRLF. A
// line that ends with a bare LF, or holds a CR or NUL, is refused: the
// head is relayed from these lines and must mean to the client what it
// meant to the proxy.
func (bc *backendConn) readLine() ([]byte, error) {
	line, err := bc.br.ReadSlice('\n')
	if len(line) > 0 {
		bc.received = true
	}
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: header line over %d bytes", errBadAnswer, backendReadBuf)
		}
		return nil, fmt.Errorf("proxy: reading the answer: %w", err)
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: line %q not ended by CRLF", errBadAnswer, line)
	}
	line = line[:len(line)-2]
	if bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, 0) >= 0 {
		return nil, fmt.Errorf("%w: CR or NUL in line %q", errBadAnswer, line)
	}
	return line, nil
}

// connPool keeps a backend's idle connections for the fast path, the most
// recently used first, at most max of them, none idle longer than idle.
type connPool struct {
	b    *backend
	max  int
	idle time.Duration

	mu    sync.Mutex
	conns []*backendConn
	timer *time.Timer // closes expired connections while nobody asks for one
}

// pool returns the backend's connection pool, creating it on first use.
func (p *HTTPProxy) pool(b *backend) *connPool {
	if cp := b.pool.Load(); cp != nil {
		return cp
	}
	cp := &connPool{b: b, max: p.opts.IdlePerBackend, idle: p.opts.BackendIdle}
	if b.pool.CompareAndSwap(nil, cp) {
		return cp
	}
	return b.pool.Load()
}

// get returns an idle connection, or nil. Whether the backend closed it,
// or wrote to it while it was idle (late bytes of an earlier answer,
// which would be read as this request's answer), is checked when the
// request is written (send: reused), in the same readiness wait as the
// write; such a connection is closed, never used.
func (cp *connPool) get() *backendConn {
	for {
		cp.mu.Lock()
		n := len(cp.conns)
		if n == 0 {
			cp.mu.Unlock()
			return nil
		}
		bc := cp.conns[n-1]
		cp.conns[n-1] = nil
		cp.conns = cp.conns[:n-1]
		cp.mu.Unlock()
		if time.Since(bc.idleAt) >= cp.idle || bc.br.Buffered() > 0 {
			bc.close()
			continue
		}
		bc.received = false
		return bc
	}
}

// put keeps bc for a later request, or closes it (also when bytes beyond
// the answer are buffered already).
func (cp *connPool) put(bc *backendConn) {
	if cp.b.removed.Load() || bc.br.Buffered() > 0 {
		bc.close()
		return
	}
	bc.idleAt = time.Now()
	cp.mu.Lock()
	if len(cp.conns) >= cp.max {
		cp.mu.Unlock()
		bc.close()
		return
	}
	cp.conns = append(cp.conns, bc)
	if cp.timer == nil {
		cp.timer = time.AfterFunc(cp.idle, cp.expire)
	}
	cp.mu.Unlock()
}

// expire closes the connections idle for too long and runs again when the
// oldest left will be.
func (cp *connPool) expire() {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	now := time.Now()
	n := 0
	for n < len(cp.conns) && now.Sub(cp.conns[n].idleAt) >= cp.idle {
		cp.conns[n].close()
		n++
	}
	cp.conns = append(cp.conns[:0], cp.conns[n:]...)
	if len(cp.conns) == 0 {
		cp.timer = nil
		return
	}
	cp.timer.Reset(cp.idle - now.Sub(cp.conns[0].idleAt))
}

// closeIdle closes every idle connection.
func (cp *connPool) closeIdle() {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	for _, bc := range cp.conns {
		bc.close()
	}
	clear(cp.conns)
	cp.conns = cp.conns[:0]
}
