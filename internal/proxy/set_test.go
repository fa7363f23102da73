package proxy

import (
	"context"
	"errors"
	"testing"
	"time"
)

func mustSet(t testing.TB, s *Set, bs ...Backend) {
	t.Helper()
	if err := s.SetBackends(bs); err != nil {
		t.Fatal(err)
	}
}

func TestSetBackendsValidates(t *testing.T) {
	ok := Backend{ID: "a", Network: "tcp", Addr: "127.0.0.1:8080", Weight: 1}
	for name, bs := range map[string][]Backend{
		"empty id":     {{Network: "tcp", Addr: "127.0.0.1:1"}},
		"duplicate id": {ok, ok},
		"negative":     {{ID: "a", Network: "tcp", Addr: "127.0.0.1:1", Weight: -1}},
		"too heavy":    {{ID: "a", Network: "tcp", Addr: "127.0.0.1:1", Weight: MaxWeight + 1}},
		"remote":       {{ID: "a", Network: "tcp", Addr: "192.0.2.1:80"}},
		"name":         {{ID: "a", Network: "tcp", Addr: "example.com:80"}},
		"no port":      {{ID: "a", Network: "tcp", Addr: "127.0.0.1:0"}},
		"udp":          {{ID: "a", Network: "udp", Addr: "127.0.0.1:53"}},
		"unix empty":   {{ID: "a", Network: "unix"}},
	} {
		s := NewSet(SetOptions{})
		mustSet(t, s, ok)
		err := s.SetBackends(bs)
		if !errors.Is(err, ErrBadBackend) {
			t.Errorf("%s: err = %v, want ErrBadBackend", name, err)
		}
		if got := s.Backends(); len(got) != 1 || got[0] != ok {
			t.Errorf("%s: a refused list changed the set: %v", name, got)
		}
	}
	s := NewSet(SetOptions{})
	mustSet(t, s,
		Backend{ID: "v4", Network: "tcp", Addr: "127.0.0.2:1"},
		Backend{ID: "v6", Network: "tcp6", Addr: "[::1]:1"},
		Backend{ID: "name", Network: "tcp", Addr: "localhost:1"},
		Backend{ID: "unix", Network: "unix", Addr: "/run/app.sock"})
}

// Smooth weighted round robin gives exact shares over every run of
// sum-of-weights picks, interleaved rather than in bursts.
func TestPickSmooth(t *testing.T) {
	s := NewSet(SetOptions{})
	mustSet(t, s,
		Backend{ID: "a", Network: "tcp", Addr: "127.0.0.1:1", Weight: 5},
		Backend{ID: "b", Network: "tcp", Addr: "127.0.0.1:2", Weight: 1},
		Backend{ID: "c", Network: "tcp", Addr: "127.0.0.1:3", Weight: 1},
		Backend{ID: "z", Network: "tcp", Addr: "127.0.0.1:4", Weight: 0})
	tab := s.tab.Load()
	got := ""
	for range 14 {
		got += tab.pick(nil).ID
	}
	if want := "aabacaaaabacaa"; got != want {
		t.Errorf("picks %s, want %s", got, want)
	}
	a := s.all["a"]
	for range 10 {
		if b := tab.pick([]*backend{a}); b == nil || b.ID == "a" || b.ID == "z" {
			t.Fatalf("pick skipping a returned %v", b)
		}
	}
	if b := tab.byID("z"); b != nil {
		t.Errorf("byID returned weight-0 backend %s", b.ID)
	}
}

// Backends reads the list while requests pick from it (baton status
// during load): under -race this fails if Backends copies the round-robin
// state that pick updates.
func TestBackendsWhilePicking(t *testing.T) {
	s := NewSet(SetOptions{})
	mustSet(t, s,
		Backend{ID: "a", Network: "tcp", Addr: "127.0.0.1:1", Weight: 1},
		Backend{ID: "b", Network: "tcp", Addr: "127.0.0.1:2", Weight: 3},
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 2000 {
			tab := s.tab.Load()
			if b := s.acquire(&tab, "", nil); b != nil {
				b.end()
			}
		}
	}()
	for range 2000 {
		if bs := s.Backends(); len(bs) != 2 || bs[1].Weight != 3 {
			t.Fatalf("Backends() = %+v", bs)
		}
	}
	<-done
}

func TestSetBackendsKeepsState(t *testing.T) {
	s := NewSet(SetOptions{})
	mustSet(t, s, Backend{ID: "a", Network: "tcp", Addr: "127.0.0.1:1", Weight: 1})
	a := s.all["a"]
	a.stats.answer(time.Millisecond, false)
	mustSet(t, s, Backend{ID: "a", Network: "tcp", Addr: "127.0.0.1:1", Weight: 7})
	if s.all["a"] != a {
		t.Fatal("same ID and address got a new state")
	}
	if st := s.Stats()["a"]; st.Requests != 1 || st.Weight != 7 || !st.Active {
		t.Errorf("stats after reweight: %+v", st)
	}
	mustSet(t, s, Backend{ID: "a", Network: "tcp", Addr: "127.0.0.1:2", Weight: 7})
	if s.all["a"] == a || !a.removed.Load() {
		t.Error("a new address must start a new state and retire the old one")
	}
}

func TestWaitIdle(t *testing.T) {
	s := NewSet(SetOptions{})
	a := Backend{ID: "a", Network: "tcp", Addr: "127.0.0.1:1", Weight: 1}
	b := Backend{ID: "b", Network: "tcp", Addr: "127.0.0.1:2", Weight: 1}
	mustSet(t, s, a, b)
	tab := s.tab.Load()
	got := s.acquire(&tab, "a", nil)
	if got == nil || got.ID != "a" {
		t.Fatalf("acquire(a) = %v", got)
	}
	if err := s.WaitIdle(context.Background(), "a"); !errors.Is(err, ErrBadBackend) {
		t.Errorf("WaitIdle on a listed backend: %v", err)
	}
	mustSet(t, s, b)
	st := s.Stats()["a"]
	if st.Active || st.InFlight != 1 || st.Weight != 0 {
		t.Errorf("removed backend with one in flight: %+v", st)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.WaitIdle(done, "a"); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitIdle with work in flight and a done context: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- s.WaitIdle(context.Background(), "a") }()
	got.end()
	if err := <-waited; err != nil {
		t.Errorf("WaitIdle: %v", err)
	}
	// The stale list still names a: acquire must not hand it out.
	for range 10 {
		if x := s.acquire(&tab, "a", nil); x == nil || x.ID != "b" {
			t.Fatalf("acquire from a stale list returned %v", x)
		} else {
			x.end()
		}
	}
	if err := s.WaitIdle(context.Background(), "nobody"); err != nil {
		t.Errorf("unknown id: %v", err)
	}
	// Forgotten at the next change once drained.
	mustSet(t, s, b)
	if _, ok := s.Stats()["a"]; ok {
		t.Error("a drained, removed backend is still reported after the next SetBackends")
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 {
		t.Error("empty histogram quantile not 0")
	}
	for i := 1; i <= 1000; i++ {
		h.Add(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, time.Millisecond}} {
		got := h.Quantile(c.q)
		if got < c.want || float64(got) > float64(c.want)*(1+1.0/16) {
			t.Errorf("q%.2f = %v, want %v .. +6.25%%", c.q, got, c.want)
		}
	}
	// Every bucket's bounds are consistent.
	for i := 1; i < nBuckets; i++ {
		if bucketUpper(i) <= bucketUpper(i-1) || bucketOf(bucketUpper(i)) != i || bucketOf(bucketUpper(i-1)+1) != i {
			t.Fatalf("bucket %d: upper %d, previous upper %d", i, bucketUpper(i), bucketUpper(i-1))
		}
	}
	if bucketOf(-1) != 0 || bucketOf(100*time.Hour) != nBuckets-1 {
		t.Error("out-of-range durations not clamped")
	}
	prev := h
	for range 100 {
		h.Add(time.Second)
	}
	d := h.Sub(prev)
	if d.Count() != 100 || d.Quantile(0.5) < time.Second {
		t.Errorf("Sub: count %d, p50 %v", d.Count(), d.Quantile(0.5))
	}
}

func TestStatsWindowAndSub(t *testing.T) {
	now := time.Unix(1000, 0)
	s := NewSet(SetOptions{Window: 10 * time.Second, now: func() time.Time { return now }})
	mustSet(t, s, Backend{ID: "a", Network: "tcp", Addr: "127.0.0.1:1", Weight: 1})
	a := s.all["a"]
	for range 90 {
		a.stats.answer(time.Millisecond, false)
	}
	for range 10 {
		a.stats.answer(100*time.Millisecond, true)
	}
	a.stats.connError()
	step0 := s.Stats()["a"]
	if w := step0.Window; w.Requests != 100 || w.Errors5xx != 10 || w.ConnErrors != 1 || w.Span != 10*time.Second {
		t.Errorf("window: %+v", w)
	}
	if r := step0.ErrorRatio(); r < 0.108 || r > 0.109 { // 11/101
		t.Errorf("error ratio %v", r)
	}
	if p := step0.Window.P99; p < 100*time.Millisecond || p > 107*time.Millisecond {
		t.Errorf("window p99 %v", p)
	}

	// 5 s later: the old slots are still in the window.
	now = now.Add(5 * time.Second)
	for range 50 {
		a.stats.answer(2*time.Millisecond, false)
	}
	if w := s.Stats()["a"].Window; w.Requests != 150 {
		t.Errorf("window after 5s: %d requests, want 150", w.Requests)
	}
	step := s.Stats()["a"].Sub(step0)
	if step.Requests != 50 || step.Errors5xx != 0 || step.ConnErrors != 0 || step.ErrorRatio() != 0 {
		t.Errorf("step figures: %+v", step)
	}
	if p := step.P50(); p < 2*time.Millisecond || p > 2125*time.Microsecond {
		t.Errorf("step p50 %v", p)
	}
	// 11 s after the start: the first second's slot has left the window.
	now = now.Add(6 * time.Second)
	if w := s.Stats()["a"].Window; w.Requests != 50 || w.Errors5xx != 0 {
		t.Errorf("window after 11s: %+v", w)
	}
	now = now.Add(time.Hour)
	if w := s.Stats()["a"].Window; w.Requests != 0 || w.P99 != 0 {
		t.Errorf("window an hour later: %+v", w)
	}
	if st := s.Stats()["a"]; st.Requests != 150 || st.Errors5xx != 10 {
		t.Errorf("cumulative: %+v", st)
	}
}
