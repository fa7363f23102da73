package report

import (
	"bytes"
	"encoding/xml"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/events"
)

func load(t *testing.T, name string) []events.Record {
	t.Helper()
	recs, skipped, err := events.ReadFile("testdata/" + name)
	if err != nil || skipped != 0 || len(recs) == 0 {
		t.Fatalf("testdata/%s: %d records, %d skipped, %v", name, len(recs), skipped, err)
	}
	return recs
}

func lane(t *testing.T, tl *Timeline, gen int) Lane {
	t.Helper()
	for _, l := range tl.Lanes {
		if l.Generation == gen {
			return l
		}
	}
	t.Fatalf("no lane for generation %d", gen)
	return Lane{}
}

func phases(l Lane) string {
	var ps []string
	for _, s := range l.Spans {
		ps = append(ps, string(s.Phase))
	}
	return strings.Join(ps, " ")
}

// The records of a real `baton run` service (testdata/supervisor.jsonl):
// started, three upgrades, `baton rollback`, one more upgrade, stopped.
func TestBuildSupervisor(t *testing.T) {
	tl := Build(load(t, "supervisor.jsonl"), Options{Service: "sup", Upgrades: -1})
	if len(tl.Lanes) != 6 {
		t.Fatalf("%d lanes, want 6 generations", len(tl.Lanes))
	}
	for gen, want := range map[int]string{
		1: "starting ready serving draining exited",
		2: "starting ready serving draining exited",
		4: "starting ready serving draining exited",
		5: "starting ready serving draining exited",
		6: "starting ready serving draining exited", // stopped at the end
	} {
		if got := phases(lane(t, tl, gen)); got != want {
			t.Errorf("generation %d: %s, want %s", gen, got, want)
		}
	}
	if l := lane(t, tl, 5); l.PID != 1295 || l.Reason != "rollback" {
		t.Errorf("generation 5: %+v", l)
	}
	var ops []string
	for _, u := range tl.Upgrades {
		ops = append(ops, u.Operation+":"+u.Result)
	}
	if got, want := strings.Join(ops, " "), "start:ok upgrade:ok upgrade:ok upgrade:ok rollback:ok upgrade:ok stop:ok"; got != want {
		t.Errorf("operations %s, want %s", got, want)
	}
	up := tl.Upgrades[1] // generation 1 -> 2
	if up.From == nil || up.To == nil || up.From.PID != 946 || up.To.PID != 1044 || up.To.Generation != 2 {
		t.Fatalf("first upgrade: from %+v to %+v", up.From, up.To)
	}
	if up.Start <= 0 || up.Ready <= 0 || up.Handover <= 0 || up.Drain <= 0 || up.Switch < up.Ready {
		t.Errorf("first upgrade's durations: %+v", up)
	}
	rb := tl.Upgrades[4]
	if rb.From == nil || rb.From.Generation != 4 || rb.To == nil || rb.To.Generation != 5 || rb.Drain <= 0 {
		t.Errorf("rollback: %+v from %+v to %+v", rb, rb.From, rb.To)
	}
	var kinds []string
	for _, m := range tl.Marks {
		kinds = append(kinds, string(m.Kind))
	}
	if got := strings.Join(kinds, " "); !strings.Contains(got, "upgrade switch upgrade switch upgrade switch upgrade switch rollback upgrade switch") {
		t.Errorf("marks: %s", got)
	}
}

// A library service whose new generation was killed during its probation:
// the old one started its own binary again (testdata/library.jsonl).
func TestBuildLibraryRollbackOnProbation(t *testing.T) {
	tl := Build(load(t, "library.jsonl"), Options{})
	if tl.Service != "lib" {
		t.Errorf("service %q", tl.Service)
	}
	if got := phases(lane(t, tl, 1)); got != "serving draining exited" {
		t.Errorf("generation 1 (running before any record): %s", got)
	}
	if got := phases(lane(t, tl, 3)); got != "starting ready serving failed" {
		t.Errorf("generation 3 (killed in its probation): %s", got)
	}
	if l := lane(t, tl, 4); phases(l) != "starting ready serving" || !l.Spans[len(l.Spans)-1].Open || l.Reason != "rollback" {
		t.Errorf("generation 4 (the rescue): %s %+v", phases(l), l)
	}
	if len(tl.Upgrades) != 2 {
		t.Fatalf("%d upgrades, want 2", len(tl.Upgrades))
	}
	u := tl.Upgrades[1]
	if u.Result != "rolled_back" || u.ErrorType != "child_exited" || u.From.Generation != 2 || u.To.Generation != 3 || u.Drain <= 0 {
		t.Errorf("the rolled back upgrade: %+v from %+v to %+v", u, u.From, u.To)
	}
	rolled := false
	for _, m := range tl.Marks {
		rolled = rolled || m.Kind == MarkRollback
	}
	if !rolled {
		t.Error("no rollback mark")
	}
}

func TestRecentKeepsTheLastUpgrades(t *testing.T) {
	recs := load(t, "supervisor.jsonl")
	tl := Build(recs, Options{Upgrades: 2})
	if len(tl.Upgrades) != 2 || tl.Upgrades[0].Operation != "upgrade" || tl.Upgrades[1].Operation != "stop" {
		t.Fatalf("the last 2 operations: %+v", tl.Upgrades)
	}
	// Generation 5 served before the first record shown.
	if l := lane(t, tl, 5); !l.Before || phases(l) != "serving draining exited" {
		t.Errorf("generation 5: %s before=%v", phases(l), l.Before)
	}
	if tl.Records >= tl.Total {
		t.Errorf("%d of %d records shown", tl.Records, tl.Total)
	}
}

func TestFailedUpgrade(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return at.Add(time.Duration(n) * time.Millisecond) }
	recs := []events.Record{
		{Time: ms(0), Name: events.Serving, PID: 10, Generation: 1, Operation: "start", Deployment: "d0"},
		{Time: ms(100), Name: events.UpgradeStarted, PID: 10, Generation: 1, Operation: "upgrade", Deployment: "d1"},
		{Time: ms(103), Name: events.Started, PID: 11, Generation: 2, Operation: "upgrade", Deployment: "d1", Duration: 0.003},
		{Time: ms(150), Name: events.StartFailed, PID: 11, Generation: 2, Operation: "upgrade", Deployment: "d1", ErrorType: "child_exited", Error: "exit code 1\nlast stderr: boom"},
		{Time: ms(151), Name: events.UpgradeFailed, Operation: "upgrade", Deployment: "d1", ErrorType: "child_exited", Error: "exit code 1\nlast stderr: boom", Duration: 0.051},
	}
	tl := Build(recs, Options{Now: ms(2000)})
	if got := phases(lane(t, tl, 2)); got != "starting failed" {
		t.Errorf("the failed generation: %s", got)
	}
	if l := lane(t, tl, 1); phases(l) != "serving" || !l.Spans[0].Open || !l.Spans[0].To.Equal(ms(2000)) {
		t.Errorf("the generation that kept serving: %+v", l)
	}
	u := tl.Upgrades[1]
	if u.Result != "failed" || u.ErrorType != "child_exited" || u.To.PID != 11 || u.Start != 3*time.Millisecond {
		t.Errorf("failed upgrade: %+v", u)
	}
	var b bytes.Buffer
	if err := HTML(&b, tl); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "✗ failed") || !strings.Contains(b.String(), "child_exited: exit code 1") {
		t.Errorf("the page does not show the failure")
	}
}

// Names and messages come from the service (and its app's stderr): the
// page escapes them, and has no script at all.
func TestHTMLEscapes(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	evil := `<script>alert("x")</script>&<b>`
	recs := []events.Record{
		{Time: at, Name: events.UpgradeStarted, Service: evil, PID: 10, Generation: 1, Operation: "upgrade", Deployment: `d"1<`},
		{Time: at.Add(time.Millisecond), Name: events.Started, Service: evil, PID: 11, Generation: 2, Operation: "upgrade", Deployment: `d"1<`, Reason: "<i>upgrade</i>"},
		{Time: at.Add(9 * time.Millisecond), Name: events.StartFailed, Service: evil, PID: 11, Generation: 2, Deployment: `d"1<`, ErrorType: "child_exited", Error: evil},
		{Time: at.Add(10 * time.Millisecond), Name: events.UpgradeFailed, Service: evil, Deployment: `d"1<`, ErrorType: "child_exited", Error: evil},
	}
	var b bytes.Buffer
	if err := HTML(&b, Build(recs, Options{Service: evil})); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, bad := range []string{"<script", "<b>", "<i>", `d"1<`} {
		if strings.Contains(page, bad) {
			t.Errorf("the page contains %q unescaped", bad)
		}
	}
	if !strings.Contains(page, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;&lt;b&gt;") {
		t.Errorf("the service name is not shown escaped:\n%s", page)
	}
	wellFormed(t, page)
}

// The page stands alone: no script, no link, nothing fetched.
func TestHTMLSelfContained(t *testing.T) {
	var b bytes.Buffer
	if err := HTML(&b, Build(load(t, "supervisor.jsonl"), Options{Upgrades: -1})); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if m := regexp.MustCompile(`(?i)<script|<link|<img|<iframe|<object|\bsrc=|\bhref=|url\(|@import`).FindString(page); m != "" {
		t.Errorf("the page refers to something outside it: %q", m)
	}
	wellFormed(t, page)
	// Every generation's pid is on the page, in its lane's label.
	for _, pid := range []int{946, 1044, 1091, 1208, 1295, 1350} {
		if !strings.Contains(page, "pid "+strconv.Itoa(pid)+"<") {
			t.Errorf("pid %d is not on the page", pid)
		}
	}
	for _, p := range Phases {
		if !strings.Contains(page, `class="sw `+string(p)+`"`) {
			t.Errorf("the legend has no %s", p)
		}
	}
	if n := strings.Count(page, `<rect class="draining`); n != 6 {
		t.Errorf("%d draining spans drawn, want 6", n)
	}
	if os.Getenv("REPORT_OUT") != "" {
		os.WriteFile(os.Getenv("REPORT_OUT"), b.Bytes(), 0o644)
	}
}

func TestHTMLEmpty(t *testing.T) {
	var b bytes.Buffer
	if err := HTML(&b, Build(nil, Options{Service: "web", Source: "/run/baton/events/web.jsonl"})); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "No lifecycle records to show in /run/baton/events/web.jsonl") {
		t.Errorf("empty page:\n%s", b.String())
	}
	wellFormed(t, b.String())
}

// wellFormed checks that every element is closed where it should be:
// the page parses as XML.
func wellFormed(t *testing.T, page string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(page))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("the page is not well formed: %v", err)
		}
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                        "0",
		850 * time.Microsecond:   "850µs",
		12345 * time.Microsecond: "12.3ms",
		20 * time.Millisecond:    "20ms",
		250 * time.Millisecond:   "250ms",
		1250 * time.Millisecond:  "1.25s",
		3 * time.Second:          "3s",
		123 * time.Second:        "2m3s",
	} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%v) = %q, want %q", d, got, want)
		}
	}
}
