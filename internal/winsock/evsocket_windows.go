package winsock

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/windows"
)

// evSocket is the part that PacketConn and EventConn share: a SOCKET whose
// reads and writes are overlapped operations completed through events, never
// through an I/O completion port. Every copy of a socket (in any process)
// shares one IOCP association, so a completion packet would be queued to the
// port of whichever process associated the socket first, where a Go runtime
// crashes on a packet it did not start; the low bit of OVERLAPPED.hEvent
// tells Windows to queue none.
//
// Each direction runs one operation at a time; a blocked operation holds an
// OS thread (WaitForMultipleObjects) until it completes, is cancelled by
// Close, or its deadline passes.
type evSocket struct {
	s      windows.Handle
	h      *evHandles
	closed atomic.Bool
	// sockMu guards s against Close for calls that use it outside an
	// operation (shutdown, getsockopt, WSADuplicateSocket): Close holds it
	// for writing.
	sockMu sync.RWMutex

	r, w direction
}

// ioOp is the memory the kernel reads and writes while an operation is
// pending. It lives on the heap and is referenced by its direction (or by
// leakedIOOps) until the operation is known to be complete. The caller's
// buffer is never handed to the kernel: data is copied through buf, so a
// late write by a stuck operation cannot reach memory the caller reuses.
type ioOp struct {
	ov     windows.Overlapped
	wsabuf windows.WSABuf
	rsa    windows.RawSockaddrAny // source (reads) or destination (writes) of a datagram
	rsaLen int32
	flags  uint32
	qty    uint32
	buf    []byte
}

// grow makes op.buf at least n bytes long (at most maxIOBuf), and returns
// the usable length.
func (op *ioOp) grow(n int) int {
	n = min(n, maxIOBuf)
	if len(op.buf) < n {
		// Round up to a power of two from 4 KiB: a few sizes, each
		// allocated once per direction.
		size := 4 << 10
		for size < n {
			size <<= 1
		}
		op.buf = make([]byte, size)
	}
	return n
}

// maxIOBuf is the largest buffer an operation gets: room for any UDP
// datagram.
const maxIOBuf = 1 << 16

// leakedIOOps holds operations that did not complete after cancellation,
// forever (guarded by leakedMu).
var leakedIOOps []*ioOp

// errStuck reports that a cancelled operation never completed: its memory
// is kept alive for ever and that direction of the socket is unusable.
var errStuck = errors.New("winsock: a cancelled socket operation did not complete; the connection is unusable")

// evHandles are the handles an evSocket owns. It is a separate allocation
// so that a cleanup can close them when a connection is dropped unclosed.
// A field is 0 once closed, or for an event left to a stuck operation.
type evHandles struct {
	s          windows.Handle
	closeEvent windows.Handle // manual reset, set once by Close
	rEvent     windows.Handle // manual reset, completes the read operation
	rChanged   windows.Handle // auto reset, set by SetReadDeadline
	wEvent     windows.Handle
	wChanged   windows.Handle
}

func (h *evHandles) closeEvents() {
	for _, p := range []*windows.Handle{&h.closeEvent, &h.rEvent, &h.rChanged, &h.wEvent, &h.wChanged} {
		if *p != 0 {
			windows.CloseHandle(*p)
			*p = 0
		}
	}
}

// release closes the socket and the events of a connection dropped
// without Close (a cleanup: no operation is pending then, it would hold
// the connection).
func (h *evHandles) release() {
	windows.Closesocket(h.s)
	h.closeEvents()
}

// direction is the state of one side (reading or writing) of an evSocket.
type direction struct {
	mu    sync.Mutex // held for a whole operation, and by Close to release handles
	op    *ioOp      // nil once leaked
	event *windows.Handle

	dlMu     sync.Mutex
	deadline time.Time
	changed  *windows.Handle // signalled when deadline changes; 0 after Close
}

// init creates the events for serving s; buffers of bufSize bytes are
// allocated now (0: when first needed). On error nothing is left open but s,
// which the caller still owns.
func (c *evSocket) init(s windows.Handle, bufSize int) error {
	h := &evHandles{s: s}
	for _, ev := range []struct {
		p           *windows.Handle
		manualReset uint32
	}{{&h.closeEvent, 1}, {&h.rEvent, 1}, {&h.rChanged, 0}, {&h.wEvent, 1}, {&h.wChanged, 0}} {
		var err error
		if *ev.p, err = windows.CreateEvent(nil, ev.manualReset, 0, nil); err != nil {
			h.closeEvents()
			return os.NewSyscallError("CreateEvent", err)
		}
	}
	c.s, c.h = s, h
	c.r = direction{op: &ioOp{buf: make([]byte, bufSize)}, event: &h.rEvent, changed: &h.rChanged}
	c.w = direction{op: &ioOp{buf: make([]byte, bufSize)}, event: &h.wEvent, changed: &h.wChanged}
	return nil
}

// do runs one overlapped operation, which start issues, on d (d.mu held)
// and returns its byte count. Errors: net.ErrClosed, os.ErrDeadlineExceeded,
// errStuck, or the operation's own (a syscall.Errno). An operation that
// completed while being cancelled reports its result.
func (c *evSocket) do(d *direction, start func(op *ioOp) error) (uint32, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if d.op == nil {
		return 0, errStuck
	}
	if _, expired := d.timeout(); expired {
		return 0, os.ErrDeadlineExceeded
	}
	op, event := d.op, *d.event
	// The low bit of hEvent asks Windows not to queue a completion packet:
	// copies in other processes share this socket's IOCP association.
	op.ov = windows.Overlapped{HEvent: event | 1}
	if err := windows.ResetEvent(event); err != nil {
		return 0, os.NewSyscallError("ResetEvent", err)
	}
	var why error // why the operation was cancelled
	switch err := start(op); err {
	case nil: // completed already
	case windows.ERROR_IO_PENDING:
		why = c.wait(d)
		if why == errStuck {
			return 0, errStuck
		}
	default:
		return 0, err
	}
	var n, flags uint32
	err := windows.WSAGetOverlappedResult(c.s, &op.ov, &n, false, &flags)
	if err != nil && why != nil && (err == windows.ERROR_OPERATION_ABORTED || c.closed.Load()) {
		err = why
	}
	return n, err
}

// wait blocks until d's pending operation completes, cancelling it when
// Close is called or the deadline passes first (moving the deadline
// recomputes the timeout). It returns nil if the operation completed by
// itself, or why it was cancelled: then the operation has completed anyway,
// with its own result (perhaps a success), unless wait returns errStuck.
// Then the operation's memory and event are leaked on purpose (the kernel
// may still write to them) and d is unusable.
func (c *evSocket) wait(d *direction) error {
	event := *d.event
	handles := []windows.Handle{event, c.h.closeEvent, *d.changed}
	var why error
	for why == nil {
		timeout, expired := d.timeout()
		if expired {
			why = os.ErrDeadlineExceeded
			break
		}
		r, err := windows.WaitForMultipleObjects(handles, false, timeout)
		switch {
		case err != nil:
			why = os.NewSyscallError("WaitForMultipleObjects", err)
		case r == windows.WAIT_OBJECT_0:
			return nil
		case r == windows.WAIT_OBJECT_0+1:
			why = net.ErrClosed
		}
		// The deadline changed or the timeout elapsed (perhaps a little
		// early): look at the deadline again.
	}
	// Closing a socket another process holds a copy of does not cancel
	// the operation: cancel it.
	windows.CancelIoEx(c.s, &d.op.ov)
	if r, err := windows.WaitForSingleObject(event, cancelWaitMillis); err == nil && r == windows.WAIT_OBJECT_0 {
		return why
	}
	leakedMu.Lock()
	leakedIOOps = append(leakedIOOps, d.op)
	leakedMu.Unlock()
	d.op, *d.event = nil, 0
	return errStuck
}

// timeout returns how long to wait for d's deadline (windows.INFINITE if
// none), or true if it has passed.
func (d *direction) timeout() (uint32, bool) {
	d.dlMu.Lock()
	dl := d.deadline
	d.dlMu.Unlock()
	return waitFor(dl)
}

// waitFor is a wait's timeout in milliseconds until the deadline dl
// (windows.INFINITE for none), or true if dl has passed.
func waitFor(dl time.Time) (uint32, bool) {
	if dl.IsZero() {
		return windows.INFINITE, false
	}
	left := time.Until(dl)
	if left <= 0 {
		return 0, true
	}
	ms := (left + time.Millisecond - 1) / time.Millisecond // round up: waking early only loops
	return uint32(min(ms, 1<<31)), false
}

func (d *direction) setDeadline(t time.Time) error {
	d.dlMu.Lock()
	defer d.dlMu.Unlock()
	if *d.changed == 0 {
		return net.ErrClosed
	}
	d.deadline = t
	// Wakes a blocked operation to recompute its timeout.
	if err := windows.SetEvent(*d.changed); err != nil {
		return os.NewSyscallError("SetEvent", err)
	}
	return nil
}

// close wakes blocked operations, which cancel themselves, then closes the
// socket and the events. Other processes' copies stay open. It returns
// net.ErrClosed if c was closed already, and within a bounded time.
func (c *evSocket) close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return net.ErrClosed
	}
	windows.SetEvent(c.h.closeEvent)
	// A woken operation releases its lock within cancelWaitMillis.
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	c.r.dlMu.Lock()
	defer c.r.dlMu.Unlock()
	c.w.dlMu.Lock()
	defer c.w.dlMu.Unlock()
	c.sockMu.Lock()
	defer c.sockMu.Unlock()
	var err error
	if e := windows.Closesocket(c.s); e != nil {
		err = os.NewSyscallError("closesocket", e)
	}
	c.h.s = windows.InvalidHandle
	c.h.closeEvents()
	return err
}

// withSocket runs f on the socket unless c is closed (net.ErrClosed).
func (c *evSocket) withSocket(f func(s windows.Handle) error) error {
	c.sockMu.RLock()
	defer c.sockMu.RUnlock()
	if c.closed.Load() {
		return net.ErrClosed
	}
	return f(c.s)
}
