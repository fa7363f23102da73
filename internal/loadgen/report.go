package loadgen

import (
	"fmt"
	"math"
	"math/bits"
	"sort"
	"strings"
	"time"
)

// Report is a point-in-time summary of a Load.
type Report struct {
	Start    time.Time
	Duration time.Duration // until now, or until the last worker exited
	ByKind   map[Kind]KindStats
	PIDs     map[int]PIDStats // successful responses per X-Pid (responses without X-Pid are not listed)
	Failures []Failure        // the first maxFailures failures, in order
}

// KindStats counts requests of one Kind. Latencies cover successful requests
// only, measured from dial/write to the last body byte; P50/P99 are upper
// bounds of a ~1.5%-wide histogram bucket.
type KindStats struct {
	OK, Failed    int64
	P50, P99, Max time.Duration
}

// PIDStats describes the successful responses carrying one X-Pid.
type PIDStats struct {
	Responses   int64
	First, Last time.Time
	Version     string // X-Version of the most recent response
	// LastSent is when the latest-sent request this pid answered was
	// written: a window that opens at T can tell an answer to a request
	// sent before T (still on its way back) from one sent after.
	LastSent time.Time
}

// Failure details one failed request (or UDP probe).
type Failure struct {
	Kind  Kind
	At    time.Time
	Phase string // dial, write, read, status (UDP: write, read, answer)
	Err   string
	PID   int // server pid if known (previous response on the same connection, or the failing response); 0 otherwise
}

// TotalOK sums successful requests over all kinds.
func (r Report) TotalOK() int64 {
	var n int64
	for _, k := range r.ByKind {
		n += k.OK
	}
	return n
}

// TotalFailed sums failed requests over all kinds.
func (r Report) TotalFailed() int64 {
	var n int64
	for _, k := range r.ByKind {
		n += k.Failed
	}
	return n
}

// String renders a compact table by kind, the pids seen and the first failures.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "load %v: ok=%d failed=%d\n", r.Duration.Round(time.Millisecond), r.TotalOK(), r.TotalFailed())
	fmt.Fprintf(&b, "%-15s %10s %8s %9s %9s %9s\n", "kind", "ok", "failed", "p50", "p99", "max")
	for _, k := range sortedKinds(r.ByKind) {
		s := r.ByKind[k]
		fmt.Fprintf(&b, "%-15s %10d %8d %9s %9s %9s\n", k, s.OK, s.Failed, fmtDur(s.P50), fmtDur(s.P99), fmtDur(s.Max))
	}
	pids := make([]int, 0, len(r.PIDs))
	for p := range r.PIDs {
		pids = append(pids, p)
	}
	sort.Slice(pids, func(i, j int) bool { return r.PIDs[pids[i]].First.Before(r.PIDs[pids[j]].First) })
	for _, p := range pids {
		s := r.PIDs[p]
		fmt.Fprintf(&b, "pid %d %s: %d responses, +%v .. +%v\n", p, s.Version, s.Responses,
			s.First.Sub(r.Start).Round(time.Millisecond), s.Last.Sub(r.Start).Round(time.Millisecond))
	}
	writeFailures(&b, r.Start, r.Failures, r.TotalFailed())
	return b.String()
}

func writeFailures(b *strings.Builder, start time.Time, fs []Failure, total int64) {
	const show = 10
	for i, f := range fs {
		if i == show {
			break
		}
		fmt.Fprintf(b, "FAIL +%v %s %s pid=%d: %s\n", f.At.Sub(start).Round(time.Millisecond), f.Kind, f.Phase, f.PID, f.Err)
	}
	if total > int64(min(len(fs), show)) {
		fmt.Fprintf(b, "... %d failures in total\n", total)
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

var kindOrder = []Kind{KeepAliveGET, KeepAlivePOST, Fresh, Slow}

func sortedKinds(m map[Kind]KindStats) []Kind {
	var ks []Kind
	for _, k := range kindOrder {
		if _, ok := m[k]; ok {
			ks = append(ks, k)
		}
	}
	return ks
}

// histogram is a log-linear latency histogram (64 sub-buckets per power of
// two, ~1.5% precision) so memory stays constant however many requests run.
type histogram struct {
	counts [histBuckets]int64
	n      int64
	max    int64
}

const (
	histSub     = 64
	histBuckets = 58 * histSub // highest index: shift 56 (63-bit values) * 64 + 127 = 3711
)

func histIndex(v int64) int {
	if v < 2*histSub {
		return int(max(v, 0))
	}
	shift := bits.Len64(uint64(v)) - 7
	return shift*histSub + int(v>>shift)
}

// histUpper is the largest value that maps to bucket i.
func histUpper(i int) int64 {
	if i < 2*histSub {
		return int64(i)
	}
	shift := i/histSub - 1
	m := int64(i - shift*histSub)
	return (m+1)<<shift - 1
}

func (h *histogram) add(d time.Duration) {
	v := int64(d)
	h.counts[histIndex(v)]++
	h.n++
	h.max = max(h.max, v)
}

func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := max(int64(math.Ceil(q*float64(h.n))), 1)
	var cum int64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			return time.Duration(min(histUpper(i), h.max))
		}
	}
	return time.Duration(h.max)
}
