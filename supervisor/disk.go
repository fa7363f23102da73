package supervisor

import (
	"context"
	"errors"
	"time"

	"github.com/baton-go/baton/internal/release"
)

// lockWait is how long restoreInstalled waits for the releases lock.
const lockWait = 3 * time.Second

// restoreInstalled puts the release that g runs back at the installed path
// after a failed upgrade, a failed probation or `baton rollback`, when the
// binary is managed by `baton install` (it has a releases directory) and
// the installed file is another release now. failedSHA, when not empty, is
// what the generation that failed ran: if that is what is installed, it is
// marked failed (a later rollback does not go back to it).
//
// Under baton run this is the one place that puts a release back after a
// started-and-failed upgrade, a probation failure or a rollback: `baton
// upgrade --binary` releases the releases lock before it asks for the
// upgrade and only reports what is installed afterwards (it puts its
// release back itself only when the supervisor never started it: refused,
// or the request did not arrive). The lock is waited for a little (another
// baton may be listing or pruning); when another deploy holds it longer,
// the disk is left to it.
func (s *Supervisor) restoreInstalled(g *generation, failedSHA string) {
	if g == nil {
		return
	}
	if !release.Managed(g.binary) {
		return // not installed by baton: nothing to put back
	}
	log := s.log.With("gen", g.n, "path", g.binary)
	sum := g.binarySHA256()
	if sum == "" {
		var err error
		if sum, err = release.FileSHA256(g.saved); err != nil {
			log.Warn("cannot tell which release the serving generation runs; installed binary left as it is", "err", err)
			return
		}
	}
	cur, err := release.FileSHA256(g.binary)
	if err == nil && cur == sum {
		return // already installed
	}
	st, err := release.Open(g.binary, release.StoreOptions{Logger: s.log})
	if err != nil {
		log.Warn("opening the releases store", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), lockWait)
	defer cancel()
	if err := st.Lock(ctx); err != nil {
		if errors.Is(err, release.ErrLocked) {
			log.Warn("another baton holds the releases lock (a deploy under way); installed binary left to it", "err", err)
		} else {
			log.Warn("locking the releases store", "err", err)
		}
		return
	}
	defer st.Unlock()
	if cur, err = release.FileSHA256(g.binary); err == nil && cur == sum {
		return // put back meanwhile (read again under the lock)
	}
	if failedSHA != "" && cur == failedSHA {
		if err := st.MarkFailed(cur); err != nil {
			log.Warn("marking the failed release", "err", err)
		}
	}
	rels, err := st.List()
	if err != nil {
		log.Warn("listing releases", "err", err)
		return
	}
	for _, r := range rels {
		if r.SHA256 != sum {
			continue
		}
		if err := st.Activate(r.ID); err != nil {
			log.Error("putting the serving release back at the installed path failed", "release", r.ID, "err", err)
			return
		}
		log.Info("installed binary rolled back to the release that serves", "release", r.ID)
		return
	}
	log.Warn("the serving generation's binary is not among the staged releases; installed binary left as it is", "sha256", sum)
}

// ranSHA256 is the sha256 of what g runs (or ran): for a generation that
// failed, so that the release it ran can be marked failed. Empty when the
// binary is not managed by baton install (nothing to mark).
func ranSHA256(g *generation) string {
	if g == nil || !release.Managed(g.binary) {
		return ""
	}
	if sum := g.binarySHA256(); sum != "" {
		return sum
	}
	sum, _ := release.FileSHA256(g.saved)
	return sum
}
