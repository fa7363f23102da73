//go:build linux

package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/testenv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestSupervisorMetrics: hello under `baton run --metrics`, 5 upgrades and
// a baton rollback; a scrape of the supervisor (which answers for every
// generation) says so: 5 successful upgrades, 1 manual rollback, the
// serving generation's number (7) and binary, each phase's histogram with
// 5 observations. Then an upgrade to a broken release: 1 failed, the last
// upgrade unsuccessful, its start observed but no ready. Then the serving
// generation killed: once its restart serves, 1 restart. Every scrape
// parses as Prometheus text format (with the classic name rules). The
// same history in `baton events --json`: the 5 upgrades and the rollback
// in order, each step with its duration; and in `baton report --html`,
// rendered by headless Chromium without a console message, every
// generation's pid a lane.
func TestSupervisorMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	browser := testenv.Command(t, "chromium", "chromium")
	dir := t.TempDir()
	app := filepath.Join(dir, "hello")
	installCopy(t, bins["hello"], app)
	addr, maddr := freeAddr(t, "tcp"), freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "supmetrics", os.Environ(), "--metrics", maddr, "--listen", "tcp://"+addr,
		"--", app, "-addr", addr, "-idle-grace", "200ms")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	m := scrape(t, maddr)
	wantMetric(t, m, 1, "baton_generation")
	wantMetric(t, m, 0, "baton_upgrades_total", "result", "success")
	first, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}

	pids := []int{first.PID} // the generations that served, in order
	for i := range 5 {
		rep, err := svc.Upgrade(ctx)
		if err != nil || !rep.OK {
			t.Fatalf("upgrade %d: %v %+v", i+1, err, rep)
		}
		pids = append(pids, rep.Result.PID)
	}
	if code, out := runCLI("rollback", "--name", "supmetrics"); code != 0 {
		t.Fatalf("baton rollback: exit %d: %s", code, out)
	}
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pids = append(pids, st.PID)
	waitFor(t, time.Minute, "every replaced generation drained", func() bool {
		s, err := svc.Status(ctx)
		return err == nil && len(s.Draining) == 0
	})

	// 5 upgrades and 1 rollback.
	m = scrape(t, maddr)
	wantMetric(t, m, 5, "baton_upgrades_total", "result", "success")
	wantMetric(t, m, 0, "baton_upgrades_total", "result", "failure")
	wantMetric(t, m, 0, "baton_upgrades_total", "result", "rolled_back")
	wantMetric(t, m, 1, "baton_rollbacks_total", "reason", "manual")
	wantMetric(t, m, 0, "baton_rollbacks_total", "reason", "probation_failed")
	if st.Generation != 7 {
		t.Errorf("status: generation %d, want 7 (1, 5 upgrades, 1 rollback)", st.Generation)
	}
	wantMetric(t, m, float64(st.Generation), "baton_generation")
	for _, phase := range []string{"start", "ready", "handover", "drain"} {
		wantMetric(t, m, 5, "baton_upgrade_duration_seconds", "phase", phase)
	}
	wantMetric(t, m, 1, "baton_last_upgrade_successful")
	success, ok := metricValue(m, "baton_last_upgrade_success_timestamp_seconds")
	if !ok || success < float64(time.Now().Add(-3*time.Minute).Unix()) {
		t.Errorf("baton_last_upgrade_success_timestamp_seconds = %v (present %v), want the last successful upgrade's time", success, ok)
	}
	wantMetric(t, m, 0, "baton_draining_generations")
	wantMetric(t, m, 0, "baton_restarts_total")
	wantMetric(t, m, 0, "baton_drain_forced_closes_total")
	wantMetric(t, m, 0, "baton_connections", "generation_role", "draining")

	// An upgrade to a broken release: it started, never got ready.
	installCopy(t, bins["hello-broken"], app)
	if rep, err := svc.Upgrade(ctx); err != nil || rep.ExitCode != exitFailed {
		t.Fatalf("upgrade to a broken release: %v, exit %d, want %d", err, rep.ExitCode, exitFailed)
	}
	m = scrape(t, maddr)
	wantMetric(t, m, 5, "baton_upgrades_total", "result", "success")
	wantMetric(t, m, 1, "baton_upgrades_total", "result", "failure")
	wantMetric(t, m, 0, "baton_last_upgrade_successful")
	wantMetric(t, m, success, "baton_last_upgrade_success_timestamp_seconds") // still the last success's
	wantMetric(t, m, 7, "baton_generation")
	wantMetric(t, m, 6, "baton_upgrade_duration_seconds", "phase", "start")
	wantMetric(t, m, 5, "baton_upgrade_duration_seconds", "phase", "ready")
	// The serving generation runs the release from before the broken one.
	b, err := os.ReadFile(bins["hello"])
	if err != nil {
		t.Fatal(err)
	}
	wantMetric(t, m, 1, "baton_build_info", "binary_sha256", fmt.Sprintf("%x", sha256.Sum256(b)))
	if _, ok := metricValue(m, "process_open_fds"); !ok {
		t.Error("no process_open_fds: the supervisor's own process metrics are missing")
	}

	// The serving generation killed: the supervisor starts it again (the
	// good release back in place), and counts 1 restart.
	installCopy(t, bins["hello"], app)
	if err := signalPID(t, st.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("killing the serving generation %d: %v", st.PID, err)
	}
	restarted := 0
	waitFor(t, time.Minute, fmt.Sprintf("a restarted generation serving after pid %d was killed", st.PID), func() bool {
		s, err := svc.Status(ctx)
		if err != nil || s.PID <= 0 || s.PID == st.PID {
			return false
		}
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Pid") != strconv.Itoa(s.PID) {
			return false
		}
		restarted = s.PID
		return true
	})
	svc.Tracker.Track(restarted)
	m = scrape(t, maddr)
	wantMetric(t, m, 1, "baton_restarts_total")
	wantMetric(t, m, 5, "baton_upgrades_total", "result", "success")
	wantMetric(t, m, 1, "baton_rollbacks_total", "reason", "manual")
	g, _ := metricValue(m, "baton_generation")
	t.Logf("after the restart: pid %d, baton_generation %v", restarted, g)

	// baton events --json: the 5 upgrades and the rollback, in order,
	// each step with its duration; the broken upgrade and the restart
	// after them.
	recs := eventsOnceRecorded(t, "supmetrics", events.Serving, restarted)
	checkInOrder(t, recs)
	ops := operations(recs)
	if got := opKinds(ops); got != "start upgrade upgrade upgrade upgrade upgrade rollback upgrade restart" {
		t.Fatalf("operations %q, want start, 5 upgrades, a rollback, the broken upgrade, a restart", got)
	}
	for i, o := range ops[1:6] {
		checkUpgrade(t, o, pids[i], pids[i+1])
	}
	checkRollback(t, ops[6], pids[5], pids[6])
	_, failed := ops[7].step(t, 0, events.StartFailed, 0)
	if failed.PID <= 0 || failed.ErrorType != "child_exited" {
		t.Errorf("the broken release's failure: %+v, want its pid and child_exited", failed)
	}
	ops[8].step(t, 0, events.Serving, restarted)

	// baton report --html: every generation a lane, the broken one and
	// the restarted one too; rendered without a console message.
	gens := append(pids, failed.PID, restarted)
	page := filepath.Join(dir, "report.html")
	code, out, errOut := batonRun(ctx, t, "report", "--name", "supmetrics", "--html", page)
	if code != 0 || !strings.Contains(out, "wrote "+page) || !strings.Contains(out, fmt.Sprintf("%d generations", len(gens))) {
		t.Fatalf("baton report: exit %d, want %d generations: %s%s", code, len(gens), out, errOut)
	}
	checkReportInChromium(t, browser, page, gens)
	t.Logf("report of %d generations (pids %v): %s", len(gens), gens, out)
}

// TestMetricsAddressRefused: --metrics with an address that cannot be
// bound stops baton run before it starts anything (exit 1), a malformed
// one is a usage error (exit 2); both say which flag.
func TestMetricsAddressRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	app := bins["hello"]
	code, out := runCLI("run", "--name", "metricsbusy", "--metrics", held.Addr().String(), "--listen", "tcp://"+freeAddr(t, "tcp"), "--", app)
	if code != exitFailed || !strings.Contains(out, "--metrics "+held.Addr().String()+": cannot listen") {
		t.Errorf("address in use: exit %d, want %d: %s", code, exitFailed, out)
	}
	code, out = runCLI("run", "--name", "metricsbad", "--metrics", "9464", "--listen", "tcp://"+freeAddr(t, "tcp"), "--", app)
	if code != 2 || !strings.Contains(out, "--metrics \"9464\"") {
		t.Errorf("malformed address: exit %d, want 2: %s", code, out)
	}
}

// scrape GETs http://addr/metrics and parses it as the Prometheus text
// format: failing to parse fails the test.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s\n%s", resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("scrape: content type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("the scrape is not Prometheus text format: %v\n%s", err, body)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last scrape:\n%s", body)
		}
	})
	return mfs
}

// metricValue is the value of family name's sample with the given
// label=value pairs (a histogram's: its observation count).
func metricValue(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func wantMetric(t *testing.T, mfs map[string]*dto.MetricFamily, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := metricValue(mfs, name, labels...)
	switch {
	case !ok:
		t.Errorf("%s%v: absent, want %v", name, labels, want)
	case got != want:
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}
