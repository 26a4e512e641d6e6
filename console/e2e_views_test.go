package console_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/custos-dev/custos/console"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/internal/testenv"
)

// ScreenshotsEnv names the variable that makes TestConsoleViewsInBrowser
// rewrite the screenshots checked in under docs/console.
const ScreenshotsEnv = "CUSTOS_CONSOLE_SCREENSHOTS"

// docShots is docs/console when ScreenshotsEnv is 1, else "".
func docShots(t *testing.T) string {
	if os.Getenv(ScreenshotsEnv) != "1" {
		return ""
	}
	dir, err := filepath.Abs(filepath.Join("..", "docs", "console"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// legendNumber is what a legend value reads without hovering: a total.
var legendNumber = regexp.MustCompile(`^[0-9][0-9,]* total$`)

// TestConsoleViewsInBrowser checks in Chromium that the grouped alert list
// shows the store's counts, pages, drills down and follows new alerts, that
// entities appear by name, and that every chart legend reads numbers
// without hovering. With CUSTOS_CONSOLE_SCREENSHOTS=1 it also rewrites the
// screenshots in docs/console.
func TestConsoleViewsInBrowser(t *testing.T) {
	bin, err := chromium()
	testenv.Require(t, "chromium", err)
	e := startGeo(t)
	cr := seedAlerts(t, e)
	want := storeGroups(e)
	ctx, jsErrs := browse(t, bin, 150*time.Second)
	tb := &tab{t: t, ctx: ctx}
	dir := docShots(t)
	shot := func(name string) chromedp.Action[chromedp.Void] {
		if dir == "" {
			return chromedp.Func(func(context.Context, *chromedp.Target) error { return nil })
		}
		return screenshot(t, filepath.Join(dir, name+".png"))
	}
	eval := func(js string) []string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return v
	}
	poll := func(js string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](js, chromedp.WithPollingTimeout(20*time.Second))(ctx, tg)
			if err != nil {
				return fmt.Errorf("waiting for %s: %w", js, err)
			}
			return nil
		})
	}
	drawn := func(charts ...string) chromedp.Action[chromedp.Void] {
		sel := make([]string, len(charts))
		for i, c := range charts {
			sel[i] = c + " .uplot"
		}
		return poll(fmt.Sprintf(`document.querySelectorAll(%q).length === %d`, strings.Join(sel, ","), len(charts)))
	}
	// legends checks that each chart's legend reads a total per series
	// while the pointer is elsewhere.
	legends := func(charts ...string) {
		t.Helper()
		for _, c := range charts {
			vals := eval(fmt.Sprintf(`[...document.querySelectorAll(%q)].map(e => e.textContent)`, c+" .u-legend .u-series:not(:first-child) .u-value"))
			if len(vals) == 0 {
				t.Errorf("%s: no legend values", c)
			}
			for _, v := range vals {
				if !legendNumber.MatchString(v) {
					t.Errorf("%s: legend value %q without hovering", c, v)
				}
			}
			x := eval(fmt.Sprintf(`[...document.querySelectorAll(%q)].map(e => e.textContent)`, c+" .u-legend .u-series:first-child .u-value"))
			if len(x) != 1 || !strings.Contains(x[0], "Z") {
				t.Errorf("%s: time legend %q without hovering", c, x)
			}
		}
	}
	base := e.apiURL + "/console"
	tb.do("login",
		chromedp.Navigate(base+"/overview"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), e.adminToken),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#chart-issuance")),
		drawn("#chart-requests", "#chart-issuance"),
		shot("overview"),
	)
	legends("#chart-requests", "#chart-issuance")

	// Grouped: one row per incident and rule, with the store's counts.
	tb.do("alerts", chromedp.Navigate(base+"/alerts"), chromedp.WaitVisible(chromedp.CSS("#alert-groups tr[data-group]")),
		drawn("#chart-alerts", "#chart-entities"), shot("alerts"))
	checkGroups := func(page int) int {
		t.Helper()
		rows := eval(`[...document.querySelectorAll("#alert-groups tr[data-group]")].map(r => r.dataset.incident + "|" + r.dataset.rule + "|" + r.querySelector("a.count").textContent)`)
		for _, r := range rows {
			f := strings.Split(r, "|")
			if n, _ := strconv.Atoi(f[2]); n != want[[2]string{f[0], f[1]}] {
				t.Errorf("page %d: group %s|%s shows %s alerts, the store has %d", page, f[0], f[1], f[2], want[[2]string{f[0], f[1]}])
			}
		}
		return len(rows)
	}
	if n := checkGroups(1); n != console.AlertPageSize {
		t.Fatalf("page 1 shows %d groups, want %d", n, console.AlertPageSize)
	}
	legends("#chart-alerts", "#chart-entities")
	if labels := eval(`[...document.querySelectorAll("#chart-entities .u-legend .u-series:not(:first-child) .u-label")].map(e => e.textContent)`); len(labels) == 0 ||
		strings.Contains(strings.Join(labels, " "), "ip:") {
		t.Errorf("entity chart labels %q are not names", labels)
	}
	tb.do("page 2", chromedp.Click(chromedp.CSS("#page-next")), chromedp.WaitVisible(chromedp.CSS("#page-prev")))
	if info := tb.text("#page-info"); !strings.HasPrefix(info, "page 2 of") {
		t.Fatalf("after next: %q", info)
	}
	if n := checkGroups(2); n != len(want)-console.AlertPageSize {
		t.Fatalf("page 2 shows %d groups, want %d", n, len(want)-console.AlertPageSize)
	}

	// Drill down from the enumeration group to its alerts, paged, named.
	tb.do("drill down",
		chromedp.Navigate(base+"/alerts?rule="+detect.RuleEnumeration),
		chromedp.WaitVisible(chromedp.CSS("#alert-groups tr[data-group] a.count")),
		chromedp.Click(chromedp.CSS("#alert-groups tr[data-group] a.count")),
		chromedp.WaitVisible(chromedp.CSS("#alerts tr[data-alert]")),
	)
	if n := len(eval(`[...document.querySelectorAll("#alerts tr[data-alert]")].map(r => r.dataset.alert)`)); n != console.AlertPageSize {
		t.Fatalf("drill-down page shows %d alerts", n)
	}
	if info := tb.text("#page-info"); !strings.HasSuffix(info, fmt.Sprintf("of %d", cr.walkAlerts)) {
		t.Fatalf("drill-down page info %q", info)
	}
	if ent := tb.text("#alerts tr[data-alert] td:nth-child(4)"); !strings.Contains(ent, "KR · AS4766 Korea Telecom") || strings.Contains(ent, "ip:") {
		t.Fatalf("drill-down entity %q", ent)
	}
	if title := tb.attr("#alerts tr[data-alert] td:nth-child(4) .entity", "title"); !strings.HasPrefix(title, "ip:198.51.100.") {
		t.Fatalf("raw entity not kept for analysts: %q", title)
	}

	// The grouped view follows new alerts without a reload.
	tb.do("live groups",
		chromedp.Navigate(base+"/alerts?rule="+detect.RuleEnumeration),
		poll(`document.getElementById("live-status").textContent === "live"`),
	)
	e.s.Detect.Raise(detect.Finding{Rule: detect.RuleEnumeration, Severity: detect.High, Entity: "ip:198.51.100.250", Summary: "one more"})
	tb.do("live count", poll(fmt.Sprintf(`document.querySelector("#alert-groups tr[data-group] a.count").textContent === "%d"`, cr.walkAlerts+1)))

	// The incident page: groups, named entities, charts with legends.
	tb.do("incident",
		chromedp.Navigate(base+"/incidents/"+cr.walkIncident),
		chromedp.WaitVisible(chromedp.CSS("#alert-groups tr[data-group]")),
		drawn("#chart-timeline", "#chart-entities"),
		chromedp.WaitVisible(chromedp.CSS("#scope .tiles, #scope .error")),
		shot("incident"),
	)
	legends("#chart-timeline", "#chart-entities")
	if ents := tb.text("#incident-entities"); !strings.Contains(ents, "Korea Telecom") {
		t.Errorf("incident entities %q", ents)
	}

	// The critical alerts name a key's custodian, a departed person, a decoy.
	tb.do("named", chromedp.Navigate(base+"/alerts?group=none&severity=critical"), chromedp.WaitVisible(chromedp.CSS("#alerts tr[data-alert]")))
	names := tb.text("#alerts")
	for _, s := range []string{cr.person, cr.departed, "departed", "member " + cr.decoy, "decoy"} {
		if !strings.Contains(names, s) {
			t.Errorf("critical alerts lack %q", s)
		}
	}
	tb.do("keys and staff",
		chromedp.Navigate(base+"/keys"), chromedp.WaitVisible(chromedp.CSS("table#keys")), shot("keys"),
		chromedp.Navigate(base+"/staff"), chromedp.WaitVisible(chromedp.CSS("table#staff")), shot("staff"),
	)
	if errs := jsErrs(); len(errs) > 0 {
		t.Fatalf("JavaScript errors: %v", errs)
	}
}
