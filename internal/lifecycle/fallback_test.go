package lifecycle

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/contract"
)

// A release that keeps crashing after an upgrade falls back to the one
// that served before it (once), and the outcome says so; a crash loop of
// the fallback gives up.
func TestCrashLoopFallsBackToThePreviousRelease(t *testing.T) {
	t.Run("crashes while serving", func(t *testing.T) { testFallback(t, false) })
	t.Run("restarts never get ready", func(t *testing.T) { testFallback(t, true) })
}

func testFallback(t *testing.T, restartsFailStart bool) {
	f := newFake()
	cfg := Config{RestartMin: time.Millisecond, MaxRestarts: 2, Logger: quiet()}
	var notices []NoticeKind
	noticeC := make(chan NoticeKind, 64)
	cfg.Notify = func(n Notice) { noticeC <- n.Kind }
	e := New(f, cfg)
	done := make(chan error, 1)
	go func() { done <- e.Run(context.Background()) }()
	first := <-f.started
	waitFor(t, "first generation serving", func() bool {
		if e.Snapshot().Phase != PhaseServing || !e.opMu.TryLock() {
			return false
		}
		e.opMu.Unlock()
		return true
	})

	// The new release gets ready, then crashes every time it runs (its
	// restarts run it again: RunAgain is one of its generations).
	crashers := map[Proc]bool{}
	var mu sync.Mutex
	f.setScript(func(p *fakeProc) error {
		mu.Lock()
		crasher := p.req.Reason == ReasonUpgrade || (p.req.Reason == ReasonRestart && crashers[p.req.RunAgain])
		if crasher {
			crashers[p] = true
		}
		mu.Unlock()
		switch {
		case !crasher:
			p.sayReady()
		case p.req.Reason == ReasonUpgrade:
			p.sayReady()
			go func() { <-first.drained; p.crash() }() // once it serves
		case restartsFailStart:
			p.crash() // before it is ready
		default:
			p.sayReady()
			go func() { // once it serves
				for e.Current() == nil || e.Current().Proc != p {
					select {
					case <-p.exited:
						return
					case <-time.After(time.Millisecond):
					}
				}
				p.crash()
			}()
		}
		return nil
	})
	if _, err := e.Upgrade(context.Background()); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	var fallback *fakeProc
	for p := range f.started {
		if p.req.Reason == ReasonFallback {
			fallback = p
			break
		}
	}
	if fallback.req.RunAgain != first {
		t.Fatalf("the fallback runs %v, want the generation that served before the upgrade", fallback.req.RunAgain)
	}
	waitFor(t, "fallback serving with the outcome recorded", func() bool {
		s := e.Snapshot()
		return s.Current != nil && s.Current.PID == fallback.pid && s.Last != nil && s.Last.Op == OpRollback
	})
	s := e.Snapshot()
	if !errors.Is(s.Last.Err, contract.ErrRolledBack) || s.Previous != nil {
		t.Fatalf("after the fallback: last %v, previous %+v", s.Last.Err, s.Previous)
	}
	if _, _, released := first.was(); !released {
		t.Fatal("the generation fallen back to is still kept as a rollback target")
	}
	for len(noticeC) > 0 {
		notices = append(notices, <-noticeC)
	}
	if !containsKind(notices, NoticeFallingBack) || !containsKind(notices, NoticeRolledBack) {
		t.Fatalf("notices %v: want %s and %s", notices, NoticeFallingBack, NoticeRolledBack)
	}

	// Now the fallback crashes in a loop too: nothing left to fall back to.
	f.setScript(func(p *fakeProc) error { p.sayReady(); go p.crash(); return nil })
	fallback.crash()
	select {
	case err := <-done:
		if !errors.Is(err, contract.ErrGaveUp) {
			t.Fatalf("Run: %v, want ErrGaveUp", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a crash loop of the fallback did not end Run")
	}
}

func containsKind(ks []NoticeKind, k NoticeKind) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

// endingProc is a fake process that can say it ended by choice.
type endingProc struct {
	*fakeProc
	byChoice bool
}

func (p endingProc) EndedByChoice() bool { <-p.exited; return p.byChoice }
func (p endingProc) Chose() <-chan struct{} {
	if p.byChoice {
		return p.exited // says so as it exits
	}
	return nil
}

type choicePlatform struct {
	*fakePlatform
	byChoice bool
}

func (c choicePlatform) Start(ctx context.Context, req StartRequest) (Proc, error) {
	p, err := c.fakePlatform.Start(ctx, req)
	if err != nil {
		return nil, err
	}
	return endingProc{p.(*fakeProc), c.byChoice}, nil
}

// The library's probation: Upgrade returns at the switch; a crash of the
// new generation during the probation rolls back (undo called, outcome
// recorded) while the replaced generation waits in WaitProbation.
func TestBackgroundProbationRollsBackAfterUpgradeReturned(t *testing.T) {
	f := newFake()
	plat := choicePlatform{fakePlatform: f}
	self := &fakeProc{pid: 1, binary: "self", ready: make(chan struct{}), exited: make(chan struct{}), drained: make(chan struct{})}
	e := New(plat, Config{Logger: quiet(), Probation: time.Minute, BackgroundProbation: true})
	g := e.Adopt(self, 1)
	e.MarkServing(g)
	undone := make(chan error, 1)
	res, err := e.UpgradeWith(context.Background(), func() (func(error), error) {
		return func(err error) { undone <- err }, nil
	})
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	child := <-f.started
	if res.PID != child.pid {
		t.Fatalf("result pid %d, want %d", res.PID, child.pid)
	}
	probationOver := make(chan struct{})
	go func() { e.WaitProbation(); close(probationOver) }()
	select {
	case <-probationOver:
		t.Fatal("WaitProbation returned while the probation runs")
	default:
	}
	child.crash() // killed right after the upgrade returned
	rescue := <-f.started
	if rescue.req.Reason != ReasonRollback || rescue.req.RunAgain != self {
		t.Fatalf("rescue request %+v: want a rollback running this generation's binary", rescue.req)
	}
	<-probationOver
	if err := <-undone; !errors.Is(err, contract.ErrRolledBack) {
		t.Fatalf("undo called with %v", err)
	}
	if s := e.Snapshot(); s.Last == nil || !errors.Is(s.Last.Err, contract.ErrRolledBack) || s.Current.PID != rescue.pid {
		t.Fatalf("after the rescue: %+v", s)
	}
}

// A generation that hands over to its own successor (or is stopped)
// during its probation has not failed it.
func TestBackgroundProbationEndByChoiceIsNoFailure(t *testing.T) {
	f := newFake()
	plat := choicePlatform{fakePlatform: f, byChoice: true}
	self := &fakeProc{pid: 1, binary: "self", ready: make(chan struct{}), exited: make(chan struct{}), drained: make(chan struct{})}
	e := New(plat, Config{Logger: quiet(), Probation: time.Minute, BackgroundProbation: true})
	g := e.Adopt(self, 1)
	e.MarkServing(g)
	if _, err := e.Upgrade(context.Background()); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	child := <-f.started
	child.exit(nil)
	e.WaitProbation()
	select {
	case p := <-f.started:
		t.Fatalf("a generation (%s) was started after an end by choice", p.req.Reason)
	default:
	}
	if s := e.Snapshot(); s.Last == nil || s.Last.Err != nil {
		t.Fatalf("last outcome %+v, want the upgrade's success", s.Last)
	}
}
