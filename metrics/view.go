package metrics

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/baton-go/baton"
	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/sockstat"
)

// view is what the collector reads of either host's status.
type view struct {
	pid, generation int
	binary          string
	draining        []int // pids of the replaced generations still draining
	listeners       []string
	counters        contract.Counters
	parentPID       int
	readyAt         *time.Time
	last            *contract.Outcome
}

func viewOf[S Status](s S) view {
	switch st := any(s).(type) {
	case baton.Status:
		v := view{pid: st.PID, generation: st.Generation, binary: st.Binary, draining: st.Draining,
			listeners: st.Listeners, counters: st.Counters, parentPID: st.ParentPID, readyAt: st.ReadyAt}
		if l := st.Last; l != nil {
			v.last = &contract.Outcome{At: l.At, OK: l.OK, Code: l.Code}
			if l.Result != nil {
				v.last.Result = &contract.UpgradeResult{Took: l.Result.Took}
			}
		}
		return v
	case contract.Status:
		v := view{pid: st.PID, generation: st.Generation, binary: st.Binary, draining: st.Draining,
			listeners: st.Listeners, parentPID: st.ParentPID, readyAt: st.ReadyAt, last: st.Last}
		if st.Counters != nil {
			v.counters = *st.Counters
		}
		return v
	}
	return view{} // (Status admits no other type)
}

// lastUpgrade is what the status tells of the last upgrade: its outcome
// when the process ran it (or is the rollback after one that failed its
// probation), else, for a generation started by an upgrade, that upgrade,
// which succeeded when this generation got ready.
func (v view) lastUpgrade() (known, ok bool, successAt time.Time) {
	if l := v.last; l != nil {
		if l.OK {
			successAt = l.At
			if l.Result != nil {
				successAt = successAt.Add(l.Result.Took)
			}
		}
		return true, l.OK, successAt
	}
	if v.parentPID != 0 && v.readyAt != nil {
		return true, true, *v.readyAt
	}
	return false, false, time.Time{}
}

// conns counts the connections on the service's stream sockets held by
// the serving generation and by the draining ones; ok is false where the
// platform does not tell (or nothing could be read).
func (v view) conns() (serving, draining int, ok bool) {
	var ports []int
	var paths []string
	for _, l := range v.listeners {
		network, addr, _ := strings.Cut(l, " ")
		switch network {
		case "tcp", "tcp4", "tcp6":
			if _, p, err := net.SplitHostPort(addr); err == nil {
				if n, err := strconv.Atoi(p); err == nil && n > 0 {
					ports = append(ports, n)
				}
			}
		case "unix":
			paths = append(paths, addr)
		}
	}
	if v.pid <= 0 || len(ports)+len(paths) == 0 {
		return 0, 0, false
	}
	n, err := sockstat.Conns(v.pid, ports, paths)
	if err != nil {
		return 0, 0, false
	}
	serving = n
	for _, pid := range v.draining {
		n, err := sockstat.Conns(pid, ports, paths)
		if errors.Is(err, sockstat.ErrUnsupported) {
			return 0, 0, false
		}
		if err == nil { // (a generation that exited meanwhile holds none)
			draining += n
		}
	}
	return serving, draining, true
}
