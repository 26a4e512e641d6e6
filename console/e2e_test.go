package console_test

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/custos-dev/custos/api"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/server"
)

// artifactsDir is where the browser test leaves its screenshots and downloads.
func artifactsDir(t *testing.T) string {
	dir := os.Getenv("CUSTOS_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "custos-console-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots and downloads in %s", dir)
	return dir
}

func chromium() (string, error) {
	for _, p := range []string{os.Getenv("CUSTOS_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", errors.New("no chromium binary (apt-get install chromium)")
}

// TestConsoleInBrowser logs in, rotates a key, watches a live alert from a
// forged token arrive, opens its incident and downloads the notification list.
func TestConsoleInBrowser(t *testing.T) {
	bin, err := chromium()
	testenv.Require(t, "chromium", err)
	e := start(t)
	art := artifactsDir(t)
	dl := filepath.Join(art, "downloads")
	os.RemoveAll(dl)
	os.MkdirAll(dl, 0o755)

	ctx, jsErrs := browse(t, bin, 90*time.Second)
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return screenshot(t, filepath.Join(art, name+".png"))
	}
	tb := &tab{t: t, ctx: ctx}
	do, text, attr := tb.do, tb.text, tb.attr
	base := e.apiURL + "/console"

	// Log in with the admin credential.
	do("login",
		chromedp.Navigate(base+"/keys"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		shot("01-login"),
		chromedp.SendKeys(chromedp.CSS("#token"), e.adminToken),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("table#keys")),
	)

	// See the active key, rotate it, see the new one.
	oldKID := attr("#keys tr.state-active", "data-kid")
	do("see key", shot("02-keys"))
	if oldKID == "" {
		t.Fatal("no active key shown")
	}
	do("rotate",
		chromedp.Click(chromedp.CSS("#rotate")),
		chromedp.WaitVisible(chromedp.CSS("#reason")),
		chromedp.SendKeys(chromedp.CSS("#reason"), "browser test rotation"),
		chromedp.Click(chromedp.CSS("#confirm")),
		shot("03-rotate-confirm"),
		chromedp.Click(chromedp.CSS("#do-rotate")),
		chromedp.WaitVisible(chromedp.CSS(".flash")),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#keys tr.state-verify-only[data-kid=%q]`, oldKID))),
		shot("04-keys-rotated"),
	)
	flash, newKID := text(".flash"), attr("#keys tr.state-active", "data-kid")
	if newKID == "" || newKID == oldKID || !strings.Contains(flash, newKID) {
		t.Fatalf("rotation not shown: old %q new %q flash %q", oldKID, newKID, flash)
	}

	// A real customer reads their profile from this address (it becomes
	// an exposure once the address is an indicator of the incident).
	ac, err := api.New(e.apiURL, filepath.Join(e.cfg.Data, server.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	var cl struct {
		Secret string `json:"client_secret"`
	}
	if err := ac.Do(ctx, "POST", "/v1/clients", map[string]any{"name": "login", "audience": []string{config.DefaultAudience}}, &cl); err != nil {
		t.Fatal(err)
	}
	var issued struct {
		AccessToken string `json:"access_token"`
	}
	victim := e.member(3)
	if err := ac.DoAuth(ctx, "POST", "/v1/tokens", cl.Secret, map[string]any{"subject": victim, "audience": config.DefaultAudience}, &issued); err != nil {
		t.Fatal(err)
	}

	// Watch the live alerts, then forge a token.
	do("alerts page",
		chromedp.Navigate(base+"/alerts?group=none"),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](`document.getElementById("live-status").textContent === "live"`, chromedp.WithPollingTimeout(15*time.Second))(ctx, tg)
			return err
		}),
	)
	if st := e.getWith(t, issued.AccessToken, "/api/members/"+victim+"/profile"); st != 200 {
		t.Fatalf("issued token refused: %d", st)
	}
	if st := e.forge(t, e.member(5)); st != 401 {
		t.Fatalf("forged token: status %d, want 401", st)
	}
	do("live alert", chromedp.WaitVisible(chromedp.CSS(`#alert-rows tr[data-alert]`)), shot("05-live-alert"))
	rule := text(`#alert-rows tr[data-alert] td:nth-child(3)`)
	incidentHref := attr(`#alert-rows tr[data-alert] td:nth-child(7) a`, "href")
	if rule != "not_issued" || incidentHref == "" {
		t.Fatalf("live alert: rule %q incident %q", rule, incidentHref)
	}

	// Open the incident: deadline clocks, scope, notification list.
	time.Sleep(500 * time.Millisecond) // let the event store take the events
	do("incident",
		chromedp.Click(chromedp.CSS(`#alert-rows tr[data-alert] td:nth-child(7) a`)),
		chromedp.WaitVisible(chromedp.CSS("#affected")),
		chromedp.WaitVisible(chromedp.CSS(".chart .uplot")),
		shot("06-incident"),
	)
	affected, clock := text("#affected"), text(".clock [data-remaining]")
	if affected == "" || affected == "0" || !strings.Contains(clock, "left") {
		t.Fatalf("incident page: affected %q clock %q", affected, clock)
	}
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dl}); err != nil {
		t.Fatal(err)
	}
	do("download", chromedp.Click(chromedp.CSS("#download-csv")))
	var rows [][]string
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, _ := filepath.Glob(filepath.Join(dl, "notification-*.csv"))
		if len(m) == 1 {
			if f, err := os.Open(m[0]); err == nil {
				rows, err = csv.NewReader(f).ReadAll()
				f.Close()
				if err == nil && len(rows) > 0 {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("notification list not downloaded into %s", dl)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if strings.Join(rows[0], ",") != "subject,member,data_classes,first_exposure,last_exposure" {
		t.Fatalf("notification list header %v", rows[0])
	}
	found := false
	for _, r := range rows[1:] {
		found = found || r[0] == victim
	}
	if !found {
		t.Fatalf("notification list %v lacks the exposed member %s", rows, victim)
	}

	// The other pages render; keep their screenshots.
	do("other pages",
		chromedp.Navigate(base+"/staff"), chromedp.WaitVisible(chromedp.CSS("table#staff")), shot("07-staff"),
		chromedp.Navigate(base+"/incidents"), chromedp.WaitVisible(chromedp.CSS("table#incidents")), shot("08-incidents"),
		chromedp.Navigate(base+"/overview"), chromedp.WaitVisible(chromedp.CSS(".chart .uplot")), shot("09-overview"),
	)
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
		t.Fatal(err)
	}
	do("dark mode",
		chromedp.Navigate(e.apiURL+incidentHref),
		chromedp.WaitVisible(chromedp.CSS("#affected")),
		chromedp.WaitVisible(chromedp.CSS(".chart .uplot")),
		shot("10-incident-dark"),
	)
	dark, err := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.body).backgroundColor`))
	if err != nil || dark == "rgb(247, 247, 245)" {
		t.Errorf("dark mode not applied: background %s %v", dark, err)
	}
	if errs := jsErrs(); len(errs) > 0 {
		t.Fatalf("JavaScript errors: %v", errs)
	}
}

// tab drives one browser tab, failing the test on the first error.
type tab struct {
	t   *testing.T
	ctx context.Context
}

func (b *tab) do(step string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", step, err)
	}
}

func (b *tab) text(sel string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(v)
}

func (b *tab) attr(sel, name string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.AttributeValue(chromedp.CSS(sel), name))
	if err != nil {
		b.t.Fatalf("attribute %s of %s: %v", name, sel, err)
	}
	return v.Value
}

// browse starts a headless Chromium for the test's duration (at most
// limit) and returns its context and the JavaScript errors it has seen.
func browse(t *testing.T, bin string, limit time.Duration) (context.Context, func() []string) {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1440, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelB := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(bctx, limit)
	t.Cleanup(func() { cancel(); cancelB(); cancelA() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		testenv.Require(t, "chromium", fmt.Errorf("failed to start %s: %w", bin, err))
	}
	var mu sync.Mutex
	var jsErrors []string
	chromedp.Listen(ctx, func(ev any) {
		if x, ok := ev.(*runtime.EventExceptionThrown); ok && x.ExceptionDetails != nil {
			mu.Lock()
			jsErrors = append(jsErrors, fmt.Sprintf("%s (%s:%d)", x.ExceptionDetails.Text, x.ExceptionDetails.URL, x.ExceptionDetails.LineNumber))
			mu.Unlock()
		}
	})
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), jsErrors...)
	}
}

// screenshot saves a full-page PNG of the current page to path.
func screenshot(t *testing.T, path string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		b, err := chromedp.FullScreenshot(100)(ctx, tg)
		if err != nil {
			return err
		}
		t.Logf("screenshot %s", path)
		return os.WriteFile(path, b, 0o644)
	})
}

// getWith calls the gateway with a bearer token and returns the status.
func (e *env) getWith(t *testing.T, tok, path string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", e.gwURL+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
