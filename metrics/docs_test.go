// promtool runs through scripts/need.sh (bash, apt): Linux only; the
// documents checked are the same on every OS.

//go:build linux

package metrics

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// The alert rules and the dashboard in docs/ use only metrics this package
// exports, their PromQL parses (promtool, from Debian's prometheus
// package), the alerts fire on the series they are meant for (promtool test
// rules), and a scrape passes promtool's lint.

var metricName = regexp.MustCompile(`\bbaton_[a-z0-9_]+`)

// exported is the name of every series the collector exports (a
// histogram's _bucket, _sum and _count), from its descriptions.
func exported(t *testing.T) map[string]bool {
	c := newCollector(func() view { return view{} })
	ch := make(chan *prometheus.Desc, 32)
	c.Describe(ch)
	close(ch)
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{}
	for d := range ch {
		m := fq.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		names[m[1]] = true
	}
	h := "baton_upgrade_duration_seconds"
	if !names[h] {
		t.Fatalf("%s not described", h)
	}
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		names[h+s] = true
	}
	return names
}

func docsPath(t *testing.T, name string) string {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "docs", name)
}

func promtool(t *testing.T, stdin []byte, args ...string) {
	t.Helper()
	bin := testenv.Command(t, "promtool", "prometheus")
	cmd := exec.Command(bin, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// dashboardExprs returns the PromQL of every panel of the dashboard.
func dashboardExprs(t *testing.T) []string {
	b, err := os.ReadFile(docsPath(t, "grafana-baton.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("docs/grafana-baton.json is not valid JSON: %v", err)
	}
	var exprs []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	return exprs
}

func TestDashboardMetricsExist(t *testing.T) {
	names := exported(t)
	seen := map[string]bool{}
	for _, e := range dashboardExprs(t) {
		for _, n := range metricName.FindAllString(e, -1) {
			seen[n] = true
			if !names[n] {
				t.Errorf("the dashboard queries %s, which is not exported: %s", n, e)
			}
		}
	}
	for _, n := range []string{"baton_upgrades_total", "baton_upgrade_duration_seconds_bucket", "baton_generation",
		"baton_draining_generations", "baton_connections"} {
		if !seen[n] {
			t.Errorf("the dashboard has no panel for %s", n)
		}
	}
}

// Each panel's query is valid PromQL once Grafana's variables are filled
// in: promtool checks them as recording rules.
func TestDashboardPromQL(t *testing.T) {
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	r := strings.NewReplacer("$__rate_interval", "5m", "$window", "1h", "$instance", ".*")
	for i, e := range dashboardExprs(t) {
		q, _ := json.Marshal(r.Replace(e))
		rules.WriteString("      - record: dashboard:query" + string(rune('a'+i)) + "\n        expr: " + string(q) + "\n")
	}
	f := filepath.Join(t.TempDir(), "dashboard.yml")
	if err := os.WriteFile(f, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	promtool(t, nil, "check", "rules", f)
}

func TestAlertRules(t *testing.T) {
	path := docsPath(t, "alerts.yml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	names := exported(t)
	for _, n := range metricName.FindAllString(string(b), -1) {
		if !names[n] {
			t.Errorf("docs/alerts.yml uses %s, which is not exported", n)
		}
	}
	promtool(t, nil, "check", "rules", path)
	// Each alert fires on the series it is meant for, and not before.
	test := `rule_files: [` + path + `]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'baton_last_upgrade_successful{instance="a"}'
        values: '1 1 0 0 0'
      - series: 'baton_rollbacks_total{instance="a",reason="manual"}'
        values: '0 0 0 1 1'
      - series: 'baton_draining_generations{instance="a"}'
        values: '4x30'
      - series: 'baton_restarts_total{instance="a"}'
        values: '0 0 1 2 3 4'
      - series: 'baton_drain_forced_closes_total{instance="a"}'
        values: '0 0 0 0 1'
    alert_rule_test:
      - {eval_time: 1m, alertname: BatonLastUpgradeFailed, exp_alerts: []}
      - eval_time: 2m
        alertname: BatonLastUpgradeFailed
        exp_alerts:
          - exp_labels: {severity: warning, instance: a}
            exp_annotations:
              summary: 'a: the last upgrade failed'
              description: 'The last upgrade of a failed or was rolled back; the previous release keeps serving. ` + "`baton status --name NAME` and `baton events --name NAME`" + ` say why.'
      - {eval_time: 2m, alertname: BatonRollbacks, exp_alerts: []}
      - eval_time: 4m
        alertname: BatonRollbacks
        exp_alerts:
          - exp_labels: {severity: warning, instance: a, reason: manual}
            exp_annotations:
              summary: 'a: rolled back (manual)'
              description: 'a rolled back to its previous release 1 time(s) in 30 minutes (reason manual).'
      - {eval_time: 10m, alertname: BatonTooManyDraining, exp_alerts: []}
      - eval_time: 20m
        alertname: BatonTooManyDraining
        exp_alerts:
          - exp_labels: {severity: warning, instance: a}
            exp_annotations:
              summary: 'a: 4 generations still draining'
              description: '4 replaced generations of a have been draining for 15 minutes or more. Upgrades are refused once --max-draining (8 by default) drain at once.'
      - {eval_time: 3m, alertname: BatonRestarting, exp_alerts: []}
      - eval_time: 5m
        alertname: BatonRestarting
        exp_alerts:
          - exp_labels: {severity: critical, instance: a}
            exp_annotations:
              summary: 'a: the app keeps crashing'
              description: 'a restarted its app 4 times in 10 minutes. ` + "`baton logs --name NAME`" + ` shows the generations'' output.'
      - {eval_time: 3m, alertname: BatonForcedDrains, exp_alerts: []}
      - eval_time: 4m
        alertname: BatonForcedDrains
        exp_alerts:
          - exp_labels: {severity: info, instance: a}
            exp_annotations:
              summary: 'a: a drain hit its deadline'
              description: '1 replaced generation(s) of a were killed at the drain deadline in the last hour; raise --drain-timeout if their connections need longer.'
`
	f := filepath.Join(t.TempDir(), "alerts_test.yml")
	if err := os.WriteFile(f, []byte(test), 0o600); err != nil {
		t.Fatal(err)
	}
	promtool(t, nil, "test", "rules", f)
}

// A scrape passes promtool's metrics lint (naming, units, help).
func TestPromtoolLint(t *testing.T) {
	src := &fake[contract.Status]{st: contract.Status{PID: os.Getpid(), Counters: &contract.Counters{}}}
	c := NewCollector(src)
	defer c.Close()
	src.emit(upgrade("a", time.Now(), 0.1, 0.1, 0.1, 0.1)...)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	promtool(t, buf.Bytes(), "check", "metrics")
}
