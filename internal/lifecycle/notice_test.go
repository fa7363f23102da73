package lifecycle

import (
	"context"
	"sync"
	"testing"
)

// The notices of one upgrade carry one deployment id (the drain of the
// replaced generation included) and the durations of their steps; the
// next operation gets another id.
func TestNoticesNameTheirOperation(t *testing.T) {
	f := newFake()
	var mu sync.Mutex
	var got []Notice
	drained := make(chan struct{}, 4)
	cfg := Config{Notify: func(n Notice) {
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
		if n.Kind == NoticeDrained {
			drained <- struct{}{}
		}
	}}
	e, _, _ := running(t, f, f, cfg)
	mu.Lock()
	got = nil // the first start's notices
	mu.Unlock()
	if _, err := e.Upgrade(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-drained
	if _, err := e.Upgrade(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-drained
	mu.Lock()
	defer mu.Unlock()
	byKind := map[NoticeKind][]Notice{}
	for _, n := range got {
		byKind[n.Kind] = append(byKind[n.Kind], n)
	}
	for _, k := range []NoticeKind{NoticeUpgrading, NoticeStarted, NoticeReady, NoticeSwitched, NoticeDrained} {
		if len(byKind[k]) != 2 {
			t.Fatalf("%s: %d notices, want 2 (got %v)", k, len(byKind[k]), got)
		}
		for i, n := range byKind[k] {
			if n.Op != OpUpgrade || n.Deployment == "" || n.Deployment != byKind[NoticeUpgrading][i].Deployment {
				t.Errorf("%s of upgrade %d: op %q deployment %q, want the upgrade's %q", k, i+1, n.Op, n.Deployment, byKind[NoticeUpgrading][i].Deployment)
			}
		}
	}
	if byKind[NoticeUpgrading][0].Deployment == byKind[NoticeUpgrading][1].Deployment {
		t.Error("two upgrades share a deployment id")
	}
	for _, k := range []NoticeKind{NoticeReady, NoticeDrained} {
		if byKind[k][0].Took <= 0 {
			t.Errorf("%s: no duration", k)
		}
	}
}
