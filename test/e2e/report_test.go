//go:build linux

package e2e

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-go/baton/events"
	"github.com/baton-go/baton/internal/testenv"
)

// chromium runs headless Chromium on page with args (--dump-dom,
// --screenshot=...) and returns its stdout and the console messages it
// logged (each "CONSOLE" line of its log: console.log/error calls and
// uncaught script errors).
func chromium(t *testing.T, bin, page string, args ...string) (string, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	all := append([]string{"--headless", "--disable-gpu", "--no-sandbox", // as root, Chromium needs --no-sandbox
		"--user-data-dir=" + t.TempDir(), "--no-first-run", "--disable-extensions",
		"--enable-logging=stderr", "--v=0"}, args...)
	cmd := exec.CommandContext(ctx, bin, append(all, "file://"+page)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var console []string
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, ":CONSOLE") {
			console = append(console, line)
		}
	}
	return stdout.String(), console
}

// checkReportInChromium renders the report page in headless Chromium and
// checks that it logged nothing to the console (no script error), that it
// holds its timeline and its table, and that each of pids is a lane. It
// returns the rendered DOM.
func checkReportInChromium(t *testing.T, browser, page string, pids []int) string {
	t.Helper()
	dom, console := chromium(t, browser, page, "--dump-dom")
	if len(console) > 0 {
		t.Errorf("the page logged to the console (or had a script error):\n%s", strings.Join(console, "\n"))
	}
	if !strings.Contains(dom, `<svg id="timeline"`) || !strings.Contains(dom, `<table id="upgrades"`) {
		t.Fatalf("the rendered DOM has no timeline or no table:\n%.3000s", dom)
	}
	for _, pid := range pids {
		if !regexp.MustCompile(`>gen \d+ · pid ` + strconv.Itoa(pid) + `<`).MatchString(dom) {
			t.Errorf("generation pid %d is not a lane of the rendered page", pid)
		}
	}
	return dom
}

// TestReportRendersInChromium: a `baton run` service upgraded twice, a
// failed upgrade (a release that exits before it is ready), a rollback and
// one more upgrade; `baton report --html` writes a page that headless
// Chromium renders with no console message or script error, whose DOM
// holds every generation's pid and a span of every phase, and whose
// picture shows the phases' colours. A planted page with a script error
// proves the console check catches one.
func TestReportRendersInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	browser := testenv.Command(t, "chromium", "chromium")
	dir := t.TempDir()
	app := filepath.Join(dir, "hello")
	installCopy(t, bins["hello"], app)
	addr := freeAddr(t, "tcp")
	svc, _ := startSupervised(t, "repsup", os.Environ(), "--listen", "tcp://"+addr,
		"--", app, "-addr", addr, "-idle-grace", "100ms")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if rep, err := svc.Upgrade(ctx); err != nil || !rep.OK {
			t.Fatalf("upgrade %d: %v %+v", i+1, err, rep)
		}
	}
	installCopy(t, bins["hello-broken"], app)
	if rep, err := svc.Upgrade(ctx); err != nil || rep.OK || rep.Code != "child_exited" {
		t.Fatalf("upgrade to a broken release: %v %+v", err, rep)
	}
	installCopy(t, bins["hello"], app)
	if code, out := runCLI("rollback", "--name", "repsup"); code != 0 {
		t.Fatalf("baton rollback: exit %d: %s", code, out)
	}
	rep, err := svc.Upgrade(ctx)
	if err != nil || !rep.OK {
		t.Fatalf("upgrade after the rollback: %v %+v", err, rep)
	}
	// Every generation but the last one drained (or failed) and is
	// recorded so: the page shows each one's end.
	var pids []int
	waitFor(t, 30*time.Second, "every old generation's end recorded", func() bool {
		recs := eventsOf(t, "repsup")
		lanes := map[int]bool{}
		pids = pids[:0]
		for _, r := range recs {
			if r.PID == 0 || r.Generation == 0 {
				continue
			}
			if _, ok := lanes[r.PID]; !ok {
				lanes[r.PID] = false
				pids = append(pids, r.PID)
			}
			if r.Name == events.Drained || r.Name == events.StartFailed {
				lanes[r.PID] = true
			}
		}
		for pid, ended := range lanes {
			if !ended && pid != rep.Result.PID {
				return false
			}
		}
		return true
	})
	if len(pids) != 6 || pids[0] != st.PID || pids[5] != rep.Result.PID {
		t.Fatalf("generations recorded: pids %v, want 6 from %d to %d", pids, st.PID, rep.Result.PID)
	}

	page := filepath.Join(dir, "report.html")
	code, out, errOut := batonRun(ctx, t, "report", "--name", "repsup", "--html", page)
	if code != 0 || !strings.Contains(out, "wrote "+page) || !strings.Contains(out, "6 operations (5 succeeded, 1 failed, 0 rolled back), 6 generations") {
		t.Fatalf("baton report: exit %d: %s%s", code, out, errOut)
	}

	dom := checkReportInChromium(t, browser, page, pids)
	for _, phase := range []string{"starting", "ready", "serving", "draining", "exited", "failed"} {
		if !strings.Contains(dom, `<rect class="`+phase) {
			t.Errorf("no %s span in the rendered page", phase)
		}
	}
	for _, mark := range []string{`class="mark rollback"`, `class="mark failed"`, `class="mark switch"`} {
		if !strings.Contains(dom, mark) {
			t.Errorf("the rendered page has no %s", mark)
		}
	}

	// The picture is drawn: the phases' colours are on the screenshot.
	shot := filepath.Join(dir, "report.png")
	if _, console := chromium(t, browser, page, "--hide-scrollbars", "--window-size=1200,900", "--screenshot="+shot); len(console) > 0 {
		t.Errorf("console messages while taking the screenshot:\n%s", strings.Join(console, "\n"))
	}
	colours := map[string][3]int{"starting": {0xf2, 0xc1, 0x4e}, "serving": {0x3c, 0x9a, 0x5f}, "draining": {0x9b, 0x7f, 0xd1}, "failed": {0xd6, 0x45, 0x45}}
	for phase, n := range countColours(t, shot, colours) {
		if n < 20 {
			t.Errorf("the screenshot shows %d pixels of %s's colour", n, phase)
		}
	}

	// The console check sees a script error.
	bad := filepath.Join(dir, "bad.html")
	os.WriteFile(bad, []byte(`<!DOCTYPE html><html><body><p>x</p><script>undefinedFunction();</script></body></html>`), 0o644)
	if _, console := chromium(t, browser, bad, "--dump-dom"); len(console) == 0 || !strings.Contains(strings.Join(console, "\n"), "undefinedFunction") {
		t.Errorf("a page with a script error logged nothing the check sees: %q", console)
	}
	t.Logf("report: %s (%d pids, rendered DOM %d bytes)", page, len(pids), len(dom))
}

// countColours counts the pixels of shot close to each colour.
func countColours(t *testing.T, shot string, colours map[string][3]int) map[string]int {
	t.Helper()
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("the screenshot: %v", err)
	}
	counts := map[string]int{}
	for name := range colours {
		counts[name] = 0
	}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			for name, c := range colours {
				if near(int(r>>8), c[0]) && near(int(g>>8), c[1]) && near(int(bl>>8), c[2]) {
					counts[name]++
				}
			}
		}
	}
	return counts
}

func near(a, b int) bool { return a-b <= 4 && b-a <= 4 }
