package report

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Layout of the picture, in SVG user units (pixels).
const (
	svgWidth    = 1120.0
	labelWidth  = 170.0 // the lanes' names on the left
	rightMargin = 24.0
	topArea     = 52.0 // two rows of operation labels above the lanes
	laneHeight  = 30.0
	barHeight   = 18.0
	axisArea    = 40.0
	endWidth    = 7.0 // how wide an instant end (exited, failed) is drawn
	minWidth    = 2.0 // the narrowest span drawn
	charWidth   = 6.6 // an estimate of one character at the label size
)

// HTML writes t as one self-contained page: no script, no external
// resource (styles inline, the picture an inline SVG), readable offline.
// Every name and message from the records is escaped (html/template).
func HTML(w io.Writer, t *Timeline) error {
	return page.Execute(w, newView(t))
}

type view struct {
	Service, Period, Zone, Summary string
	Empty                          bool
	W, H                           float64
	PlotX0, PlotX1, LanesY1        float64
	Legend                         []Phase
	Lanes                          []laneView
	Marks                          []markView
	Ticks                          []textView
	Gaps                           []textView
	Rows                           []rowView
	Source                         string
	Records, Total, Skipped        int
}

type laneView struct {
	Y, TextY     float64
	Label, Sub   string
	Rects        []rectView
	Odd          bool
	GenPID, Tail string
}

type rectView struct {
	X, Y, W, H   float64
	Phase        Phase
	Title        string
	Text         string
	TextX, TextY float64
	Killed       bool
}

type markView struct {
	X, Y0, Y1 float64
	Kind      MarkKind
	Title     string
	Label     string
	LabelY    float64
	LabelEnd  bool // anchored at its end: it would run off the picture
}

type textView struct {
	X, Y  float64
	Text  string
	Title string
}

type rowView struct {
	N                                              int
	Time, Operation, Deployment, From, To, Result  string
	Start, Ready, Handover, Switch, Drain, Problem string
	ResultClass, FullError, ShortDeployment        string
}

// xmap places instants on the x axis: the stretch between two successive
// instants is drawn by the logarithm of its length (1 ms and 10 s both
// fit), times in between linearly.
type xmap struct {
	ts []time.Time
	xs []float64
}

func newXMap(ts []time.Time, x0, x1 float64) xmap {
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	var m xmap
	for _, t := range ts {
		if n := len(m.ts); n > 0 && !t.After(m.ts[n-1]) {
			continue
		}
		m.ts = append(m.ts, t)
	}
	m.xs = make([]float64, len(m.ts))
	total := 0.0
	for i := 1; i < len(m.ts); i++ {
		total += weight(m.ts[i].Sub(m.ts[i-1]))
		m.xs[i] = total
	}
	for i := range m.xs {
		if total > 0 {
			m.xs[i] = x0 + m.xs[i]/total*(x1-x0)
		} else {
			m.xs[i] = x0
		}
	}
	return m
}

func weight(d time.Duration) float64 {
	return math.Log1p(float64(d) / float64(time.Millisecond))
}

func (m xmap) x(t time.Time) float64 {
	if len(m.ts) == 0 {
		return 0
	}
	i := sort.Search(len(m.ts), func(i int) bool { return !m.ts[i].Before(t) })
	switch {
	case i == 0:
		return m.xs[0]
	case i == len(m.ts):
		return m.xs[len(m.xs)-1]
	case m.ts[i].Equal(t):
		return m.xs[i]
	}
	a, b := m.ts[i-1], m.ts[i]
	f := float64(t.Sub(a)) / float64(b.Sub(a))
	return m.xs[i-1] + f*(m.xs[i]-m.xs[i-1])
}

func newView(t *Timeline) view {
	loc := t.Location
	if loc == nil {
		loc = time.UTC
	}
	clock := func(at time.Time) string { return at.In(loc).Format("15:04:05.000") }
	v := view{Service: t.Service, Legend: Phases, Source: t.Source, Records: t.Records, Total: t.Total, Skipped: t.Skipped,
		W: svgWidth, PlotX0: labelWidth, PlotX1: svgWidth - rightMargin}
	v.Zone, _ = t.From.In(loc).Zone()
	if len(t.Lanes) == 0 && len(t.Upgrades) == 0 {
		v.Empty = true
		v.Summary = "no upgrades recorded"
		return v
	}
	v.Period = t.From.In(loc).Format("2006-01-02 15:04:05.000") + " – " + t.To.In(loc).Format("2006-01-02 15:04:05.000")
	if t.From.In(loc).YearDay() == t.To.In(loc).YearDay() {
		v.Period = t.From.In(loc).Format("2006-01-02 15:04:05.000") + " – " + clock(t.To)
	}

	// Every instant the picture shows.
	ts := []time.Time{t.From, t.To}
	for _, l := range t.Lanes {
		for _, s := range l.Spans {
			ts = append(ts, s.From, s.To)
		}
	}
	for _, m := range t.Marks {
		ts = append(ts, m.At)
	}
	xm := newXMap(ts, v.PlotX0, v.PlotX1-endWidth)

	// Lanes.
	v.LanesY1 = topArea + float64(len(t.Lanes))*laneHeight
	for i, l := range t.Lanes {
		y := topArea + float64(i)*laneHeight
		lv := laneView{Y: y, TextY: y + laneHeight/2 + 4, Odd: i%2 == 1,
			Label: fmt.Sprintf("gen %d · pid %d", l.Generation, l.PID), Sub: l.Reason}
		by := y + (laneHeight-barHeight)/2
		name := fmt.Sprintf("generation %d (pid %d)", l.Generation, l.PID)
		for _, s := range l.Spans {
			x0, x1 := xm.x(s.From), xm.x(s.To)
			r := rectView{X: x0, Y: by, H: barHeight, Phase: s.Phase}
			switch s.Phase {
			case Exited, Failed:
				r.W = endWidth
				r.Title = fmt.Sprintf("%s %s at %s", name, s.Phase, clock(s.From))
				if s.Why != "" {
					r.Title += ": " + s.Why
				}
				if s.Phase == Exited && l.Killed {
					r.Killed = true
					r.Title += " (killed at the drain deadline)"
				}
			default:
				r.W = math.Max(x1-x0, minWidth)
				r.Title = fmt.Sprintf("%s %s %s – %s (%s)", name, s.Phase, clock(s.From), clock(s.To), Duration(s.Took()))
				if s.Open {
					r.Title = fmt.Sprintf("%s %s since %s (%s; still %s when the records end)", name, s.Phase, clock(s.From), Duration(s.Took()), s.Phase)
				}
				// A duration inside the bar where it fits (drains and starts
				// are what people look for).
				if s.Phase != Serving || !s.Open {
					if txt := Duration(s.Took()); float64(len(txt))*charWidth+6 < r.W && s.Took() > 0 {
						r.Text, r.TextX, r.TextY = txt, x0+r.W/2, by+barHeight/2+4
					}
				}
			}
			lv.Rects = append(lv.Rects, r)
		}
		v.Lanes = append(v.Lanes, lv)
	}

	// Marks: lines across the lanes; operation labels above them in two
	// staggered rows (one that would overlap both rows keeps its line and
	// tooltip only).
	num := map[string]int{}
	for i, u := range t.Upgrades {
		num[u.Deployment] = i + 1
	}
	lastEnd := [2]float64{-1e9, -1e9}
	for _, m := range t.Marks {
		x := xm.x(m.At)
		mv := markView{X: x, Y0: topArea - 6, Y1: v.LanesY1, Kind: m.Kind, Title: clock(m.At) + " " + m.Label}
		if n := num[m.Deployment]; n > 0 {
			mv.Title = fmt.Sprintf("#%d %s", n, mv.Title)
		}
		label := ""
		switch m.Kind {
		case MarkUpgrade:
			label = fmt.Sprintf("#%d %s", num[m.Deployment], m.Label)
		case MarkRollback:
			label = "↺ rollback"
		case MarkFailed:
			label = "✗ failed"
		case MarkGaveUp:
			label = "✗ gave up"
		}
		if m.Kind == MarkSwitch {
			mv.Y0 = topArea
		}
		if label != "" {
			w := float64(len([]rune(label)))*charWidth + 8
			for row := 0; row < 2; row++ {
				if x >= lastEnd[row] {
					mv.Label, mv.LabelY = label, 18+float64(row)*18
					lastEnd[row] = x + w
					if x+w > v.W {
						mv.LabelEnd = true
					}
					break
				}
			}
		}
		v.Marks = append(v.Marks, mv)
	}

	// The axis: the clock at each operation's start (where there is
	// room), and the length of every long gap the picture compresses.
	axisY := v.LanesY1 + 16
	last := -1e9
	for _, m := range t.Marks {
		if m.Kind != MarkUpgrade {
			continue
		}
		x := xm.x(m.At)
		if x-last < 84 {
			continue
		}
		last = x
		v.Ticks = append(v.Ticks, textView{X: x, Y: axisY, Text: clock(m.At)})
	}
	for i := 1; i < len(xm.ts); i++ {
		d := xm.ts[i].Sub(xm.ts[i-1])
		if d < time.Second || xm.xs[i]-xm.xs[i-1] < 40 {
			continue
		}
		v.Gaps = append(v.Gaps, textView{X: (xm.xs[i] + xm.xs[i-1]) / 2, Y: axisY + 16, Text: "⋯ " + Duration(d) + " ⋯",
			Title: clock(xm.ts[i-1]) + " – " + clock(xm.ts[i])})
	}
	v.H = v.LanesY1 + axisArea

	// The table.
	ok, failed, rolled := t.Counts()
	for i, u := range t.Upgrades {
		r := rowView{N: i + 1, Time: u.At.In(loc).Format("2006-01-02 15:04:05.000"), Operation: u.Operation,
			Deployment: u.Deployment, ShortDeployment: short(u.Deployment, 8), Result: strings.ReplaceAll(u.Result, "_", " "), ResultClass: u.Result,
			Start: dur(u.Start), Ready: dur(u.Ready), Handover: dur(u.Handover), Switch: dur(u.Switch), Drain: dur(u.Drain)}
		if u.DrainKilled {
			r.Drain += " (killed)"
		}
		if u.From != nil {
			r.From = fmt.Sprintf("gen %d · pid %d", u.From.Generation, u.From.PID)
		}
		if u.To != nil {
			r.To = fmt.Sprintf("gen %d · pid %d", u.To.Generation, u.To.PID)
		}
		if u.Error != "" {
			r.Problem = short(strings.Join(strings.Fields(u.Error), " "), 240)
			if u.ErrorType != "" {
				r.Problem = u.ErrorType + ": " + r.Problem
			}
			r.FullError = u.Error
		}
		v.Rows = append(v.Rows, r)
	}
	v.Summary = fmt.Sprintf("%d operations: %d succeeded, %d failed, %d rolled back; %d generations",
		len(t.Upgrades), ok, failed, rolled, len(t.Lanes))
	return v
}

// short cuts s to n runes (a longer one ends in "…").
func short(s string, n int) string {
	if r := []rune(s); len(r) > n {
		if n > 8 {
			return string(r[:n-1]) + "…"
		}
		return string(r[:n])
	}
	return s
}

func dur(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return Duration(d)
}

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"f":     func(x float64) string { return strconv.FormatFloat(x, 'f', 1, 64) },
	"add":   func(a, b float64) float64 { return a + b },
	"title": func(p Phase) string { return string(p) },
}).Parse(pageTemplate))

const pageTemplate = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"/>
<title>baton: upgrades of {{.Service}}</title>
<style>
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #1d1d1f; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
.meta { color: #555; margin: 0 0 12px; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; margin: 8px 0 12px; padding: 0; list-style: none; }
.legend li { display: flex; align-items: center; gap: 6px; }
.sw { display: inline-block; width: 22px; height: 12px; border-radius: 2px; }
.sw.line { height: 0; border-top: 2px dashed #444; border-radius: 0; }
.sw.line.rollback { border-top: 3px solid #e07b00; }
.sw.line.failed { border-top: 3px solid #c62828; }
rect.starting { fill: #f2c14e; } .sw.starting { background: #f2c14e; }
rect.ready { fill: #5aa9e6; } .sw.ready { background: #5aa9e6; }
rect.serving { fill: #3c9a5f; } .sw.serving { background: #3c9a5f; }
rect.draining { fill: #9b7fd1; } .sw.draining { background: #9b7fd1; }
rect.exited { fill: #8a8a8a; } .sw.exited { background: #8a8a8a; }
rect.failed { fill: #d64545; } .sw.failed { background: #d64545; }
rect.killed { stroke: #c62828; stroke-width: 2; }
svg { max-width: 100%; height: auto; border: 1px solid #ddd; background: #fff; }
svg text { font: 12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; fill: #1d1d1f; }
svg text.sub { fill: #777; font-size: 11px; }
svg text.in { fill: #fff; font-size: 11px; text-anchor: middle; }
svg text.tick { fill: #555; font-size: 11px; text-anchor: middle; }
svg text.gap { fill: #999; font-size: 11px; text-anchor: middle; }
svg text.mark { font-size: 11px; }
svg text.end { text-anchor: end; }
svg text.mark.rollback { fill: #b35f00; font-weight: 600; }
svg text.mark.failed, svg text.mark.gave_up { fill: #c62828; font-weight: 600; }
rect.band { fill: #f6f6f8; }
line.mark { stroke: #999; stroke-width: 1; }
line.mark.switch { stroke: #444; stroke-dasharray: 4 3; }
line.mark.rollback { stroke: #e07b00; stroke-width: 3; }
line.mark.failed, line.mark.gave_up { stroke: #c62828; stroke-width: 3; }
line.axis { stroke: #bbb; }
table { border-collapse: collapse; margin-top: 16px; font-size: 13px; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 10px; text-align: left; white-space: nowrap; }
th { background: #f3f3f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.problem { white-space: normal; min-width: 280px; max-width: 480px; color: #8a1c1c; }
td.result.ok { color: #1e7b3c; font-weight: 600; }
td.result.failed { color: #c62828; font-weight: 600; }
td.result.rolled_back { color: #b35f00; font-weight: 600; }
.note { color: #666; font-size: 12px; max-width: 1100px; }
</style>
</head>
<body>
<h1>Upgrades of {{.Service}}</h1>
<p class="meta">{{if .Period}}{{.Period}} ({{.Zone}}) · {{end}}{{.Summary}}</p>
{{if .Empty}}<p>No lifecycle records to show{{if .Source}} in {{.Source}}{{end}}.</p>{{else}}
<ul class="legend">
{{range .Legend}}<li><span class="sw {{title .}}"></span>{{title .}}</li>
{{end}}<li><span class="sw line"></span>switch (the new generation takes over)</li>
<li><span class="sw line rollback"></span>rollback</li>
<li><span class="sw line failed"></span>failed upgrade</li>
</ul>
<svg id="timeline" role="img" aria-label="timeline of the recent upgrades of {{.Service}}" width="{{f .W}}" height="{{f .H}}" viewBox="0 0 {{f .W}} {{f .H}}">
<title>Timeline of the recent upgrades of {{.Service}}</title>
{{range .Lanes}}{{if .Odd}}<rect class="band" x="0" y="{{f .Y}}" width="{{f $.W}}" height="30"></rect>
{{end}}{{end}}<line class="axis" x1="{{f .PlotX0}}" y1="{{f .LanesY1}}" x2="{{f .PlotX1}}" y2="{{f .LanesY1}}"></line>
{{range .Lanes}}<g class="lane">
<text x="8" y="{{f .TextY}}">{{.Label}}<tspan class="sub" dx="6">{{.Sub}}</tspan></text>
{{range .Rects}}<rect class="{{title .Phase}}{{if .Killed}} killed{{end}}" x="{{f .X}}" y="{{f .Y}}" width="{{f .W}}" height="{{f .H}}" rx="2"><title>{{.Title}}</title></rect>
{{if .Text}}<text class="in" x="{{f .TextX}}" y="{{f .TextY}}">{{.Text}}</text>
{{end}}{{end}}</g>
{{end}}{{range .Marks}}<line class="mark {{.Kind}}" x1="{{f .X}}" y1="{{f .Y0}}" x2="{{f .X}}" y2="{{f .Y1}}"><title>{{.Title}}</title></line>
{{if .Label}}<text class="mark {{.Kind}}{{if .LabelEnd}} end{{end}}" x="{{f .X}}" y="{{f .LabelY}}">{{.Label}}<title>{{.Title}}</title></text>
{{end}}{{end}}{{range .Ticks}}<text class="tick" x="{{f .X}}" y="{{f .Y}}">{{.Text}}</text>
{{end}}{{range .Gaps}}<text class="gap" x="{{f .X}}" y="{{f .Y}}">{{.Text}}<title>{{.Title}}</title></text>
{{end}}</svg>
<table id="upgrades">
<thead><tr><th>#</th><th>time</th><th>operation</th><th>from</th><th>to</th><th>result</th><th>start</th><th>ready</th><th>handover</th><th>switch</th><th>old drained</th><th>deployment</th><th>problem</th></tr></thead>
<tbody>
{{range .Rows}}<tr><td class="num">{{.N}}</td><td>{{.Time}}</td><td>{{.Operation}}</td><td>{{.From}}</td><td>{{.To}}</td><td class="result {{.ResultClass}}">{{.Result}}</td><td class="num">{{.Start}}</td><td class="num">{{.Ready}}</td><td class="num">{{.Handover}}</td><td class="num">{{.Switch}}</td><td class="num">{{.Drain}}</td><td title="{{.Deployment}}"><code>{{.ShortDeployment}}</code></td><td class="problem" title="{{.FullError}}">{{.Problem}}</td></tr>
{{end}}</tbody>
</table>
<p class="note">start: from the operation's start until the new process runs; ready: from the process start until it is ready; handover: from ready until it serves; switch: from the operation's start until the new generation serves; old drained: how long the previous generation took to finish its in-flight work. The time axis is compressed: each stretch between two steps is drawn by the logarithm of its length, so that milliseconds and minutes fit on one picture; read the durations from the labels, the tooltips and this table.</p>
{{end}}<p class="note">{{.Records}} of {{.Total}} records shown{{if .Source}}, from {{.Source}}{{end}}{{if .Skipped}}; {{.Skipped}} lines that were not records skipped{{end}}. Written by baton report.</p>
</body>
</html>
`
