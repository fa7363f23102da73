package proxy

import (
	"math"
	"math/bits"
	"sync"
	"time"
)

// Histogram counts durations in log-linear buckets: exact below 32ns, then
// 16 buckets per power of two, so a quantile is at most 1/16 (6.25%) above
// the true value. Durations above about 73 minutes count as 73 minutes.
type Histogram struct {
	counts [nBuckets]uint64
}

const (
	subBits  = 4
	maxBits  = 42                                 // 2^42 ns ≈ 73 min
	nBuckets = (maxBits - subBits + 1) << subBits // 624
)

func bucketOf(d time.Duration) int {
	v := uint64(max(d, 0))
	if v >= 1<<maxBits {
		v = 1<<maxBits - 1
	}
	if v < 2<<subBits {
		return int(v)
	}
	e := bits.Len64(v) - (subBits + 1)
	return e<<subBits + int(v>>e)
}

// bucketUpper is the largest duration counted in bucket i.
func bucketUpper(i int) time.Duration {
	if i < 2<<subBits {
		return time.Duration(i)
	}
	e := i>>subBits - 1
	m := uint64(i&(1<<subBits-1)) + 1<<subBits
	return time.Duration((m+1)<<e - 1)
}

// Add counts one duration.
func (h *Histogram) Add(d time.Duration) { h.counts[bucketOf(d)]++ }

// Count is the number of durations counted.
func (h *Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.counts {
		n += c
	}
	return n
}

// Quantile returns the duration below which a fraction q (0..1) of the
// counted durations fall (the upper bound of its bucket); 0 if empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return bucketUpper(i)
		}
	}
	return bucketUpper(nBuckets - 1)
}

// Sub returns h minus an earlier snapshot of the same histogram: the
// durations counted in between.
func (h Histogram) Sub(prev Histogram) Histogram {
	for i := range h.counts {
		h.counts[i] -= min(prev.counts[i], h.counts[i])
	}
	return h
}

// Merge adds the durations counted by o (another socket's figures of the
// same backend, say).
func (h *Histogram) Merge(o Histogram) { h.merge(&o) }

func (h *Histogram) merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
}

// BackendStats is a snapshot of one backend's figures.
//
// For HTTP, Requests counts answers received from the backend (any
// status, including 101), Errors5xx those with a status of 500 or more,
// and Latency the time to the answer's header (not its body: streams and
// WebSockets would dominate it). For TCP, Requests counts connections
// established or passed to the backend's process (TCPOptions.Pass), and
// Latency the time to connect (passes have none: a library app's canary
// is judged on its errors). ConnErrors counts attempts that got no answer: dial failures,
// resets and timeouts, passes lost half-way, and refused passes of a
// connection that no backend took.
type BackendStats struct {
	ID       string
	Network  string
	Addr     string
	Weight   int   // 0 when removed
	Active   bool  // in the Set's current list; false while a removed one drains
	InFlight int64 // requests (HTTP, including upgraded connections) or connections (TCP; a passed one only while it is passed) in progress

	Requests   int64
	Errors5xx  int64
	ConnErrors int64
	Retried    int64 // of ConnErrors: dial failures passed on to another backend (the client saw no error)
	BytesIn    int64 // TCP: bytes from clients to the backend
	BytesOut   int64 // TCP: bytes from the backend to clients
	Passed     int64 // TCP, of Requests: connections passed to the backend's process (no bytes relayed)
	Refused    int64 // TCP: passes it refused (the connection was offered to the other backends)

	Latency Histogram // since the backend was added
	Window  Window    // the recent past only
}

// Window holds a backend's figures over the Set's sliding window.
type Window struct {
	Span       time.Duration
	Requests   int64
	Errors5xx  int64
	ConnErrors int64
	P50, P99   time.Duration
}

// ErrorRatio is (Errors5xx+ConnErrors)/(Requests+ConnErrors), 0 with no
// traffic.
func (s BackendStats) ErrorRatio() float64 { return ratio(s.Errors5xx, s.ConnErrors, s.Requests) }

// ErrorRatio is (Errors5xx+ConnErrors)/(Requests+ConnErrors), 0 with no
// traffic.
func (w Window) ErrorRatio() float64 { return ratio(w.Errors5xx, w.ConnErrors, w.Requests) }

func ratio(e5xx, connErr, req int64) float64 {
	if req+connErr == 0 {
		return 0
	}
	return float64(e5xx+connErr) / float64(req+connErr)
}

// P50 and P99 of the cumulative latency histogram.
func (s BackendStats) P50() time.Duration { return s.Latency.Quantile(0.50) }

// P99 of the cumulative latency histogram.
func (s BackendStats) P99() time.Duration { return s.Latency.Quantile(0.99) }

// Sub returns the figures counted between an earlier snapshot prev of the
// same backend and s: how a canary judges one step. Identity, weight,
// in-flight count and Window are s's.
func (s BackendStats) Sub(prev BackendStats) BackendStats {
	s.Requests -= prev.Requests
	s.Errors5xx -= prev.Errors5xx
	s.ConnErrors -= prev.ConnErrors
	s.Retried -= prev.Retried
	s.BytesIn -= prev.BytesIn
	s.BytesOut -= prev.BytesOut
	s.Passed -= prev.Passed
	s.Refused -= prev.Refused
	s.Latency = s.Latency.Sub(prev.Latency)
	return s
}

const nSlots = 10

// stats are one backend's counters: cumulative, and per slot of a ring
// covering the sliding window.
type stats struct {
	mu      sync.Mutex
	now     func() time.Time
	slotDur time.Duration

	requests, e5xx, connErr, retried int64
	bytesIn, bytesOut                int64
	passedConns, refusedConns        int64
	hist                             Histogram
	slots                            [nSlots]slot
}

type slot struct {
	epoch                      int64 // time / slotDur
	requests, e5xx, connErrors int64
	hist                       Histogram
}

func (st *stats) init(window time.Duration, now func() time.Time) {
	st.now = now
	st.slotDur = max(window/nSlots, time.Millisecond)
	for i := range st.slots {
		st.slots[i].epoch = -1
	}
}

// slot returns the current slot, cleared if it held an older epoch. mu held.
func (st *stats) slot() *slot {
	e := st.now().UnixNano() / int64(st.slotDur)
	s := &st.slots[e%nSlots]
	if s.epoch != e {
		*s = slot{epoch: e}
	}
	return s
}

// answer records a response (HTTP) or an established connection (TCP).
func (st *stats) answer(lat time.Duration, is5xx bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.slot()
	st.requests++
	s.requests++
	if is5xx {
		st.e5xx++
		s.e5xx++
	}
	b := bucketOf(lat)
	st.hist.counts[b]++
	s.hist.counts[b]++
}

// connError records an attempt that got no answer.
func (st *stats) connError() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.connErr++
	st.slot().connErrors++
}

// passedOn records that the request or connection of the last failed
// attempt was then tried on another backend.
func (st *stats) passedOn() {
	st.mu.Lock()
	st.retried++
	st.mu.Unlock()
}

// passed records a TCP connection given to the backend's process: a
// request, without a latency: the time a pass takes (the queue behind
// the batch under way, a link round trip) is no connect time, and
// compared with a relayed generation's it would fail healthy canaries.
func (st *stats) passed() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.requests++
	st.slot().requests++
	st.passedConns++
}

// refused records a pass the backend refused.
func (st *stats) refused() {
	st.mu.Lock()
	st.refusedConns++
	st.mu.Unlock()
}

func (st *stats) bytes(in, out int64) {
	st.mu.Lock()
	st.bytesIn += in
	st.bytesOut += out
	st.mu.Unlock()
}

func (st *stats) snapshot(bs *BackendStats) {
	st.mu.Lock()
	defer st.mu.Unlock()
	bs.Requests, bs.Errors5xx, bs.ConnErrors, bs.Retried = st.requests, st.e5xx, st.connErr, st.retried
	bs.BytesIn, bs.BytesOut = st.bytesIn, st.bytesOut
	bs.Passed, bs.Refused = st.passedConns, st.refusedConns
	bs.Latency = st.hist
	var h Histogram
	w := Window{Span: st.slotDur * nSlots}
	e := st.now().UnixNano() / int64(st.slotDur)
	for i := range st.slots {
		s := &st.slots[i]
		if s.epoch < 0 || s.epoch <= e-nSlots || s.epoch > e {
			continue
		}
		w.Requests += s.requests
		w.Errors5xx += s.e5xx
		w.ConnErrors += s.connErrors
		h.merge(&s.hist)
	}
	w.P50, w.P99 = h.Quantile(0.50), h.Quantile(0.99)
	bs.Window = w
}

// Stats returns a snapshot of every backend's figures by ID: those in the
// current list (Active) and removed ones still known (see SetBackends).
func (s *Set) Stats() map[string]BackendStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]BackendStats, len(s.all))
	for id, b := range s.all {
		bs := BackendStats{
			ID: b.ID, Network: b.Network, Addr: b.Addr,
			Weight:   int(b.weight.Load()),
			Active:   !b.removed.Load(),
			InFlight: b.inflight.Load(),
		}
		b.stats.snapshot(&bs)
		out[id] = bs
	}
	return out
}
