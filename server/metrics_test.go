package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	goredis "github.com/redis/go-redis/v9"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/server/servertest"
	"github.com/custos-dev/custos/store"
)

// scrape reads url's Prometheus text exposition, checks it with promlint
// and returns its families by name.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || len(body) == 0 {
		t.Fatalf("GET %s: %d, %d bytes", url, resp.StatusCode, len(body))
	}
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value sums the samples of family name whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	sum, found := 0.0, false
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum, found
}

// metricsTraffic drives one server through issuance (granted and refused), the
// gateway (allowed and forged) and detection, and returns its scrape.
func metricsTraffic(t *testing.T) (*servertest.Env, map[string]*dto.MetricFamily) {
	t.Helper()
	e := start(t)
	secret := e.Client(t)
	m := e.Member(1)
	var toks []string
	for range 3 {
		toks = append(toks, e.Issue(t, secret, m))
	}
	// Refusals: a wrong client secret, and a body that is not JSON.
	for _, body := range []string{`{"subject":"` + m + `"}`, `{`} {
		req, _ := http.NewRequest("POST", e.APIURL+"/v1/tokens", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer wrong-secret")
		if body == "{" {
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("refused issuance answered %d", resp.StatusCode)
		}
	}
	if st, _ := e.Get(t, toks[0], "/api/members/"+m+"/profile"); st != 200 {
		t.Fatalf("issued token: %d", st)
	}
	if st, reason := e.Get(t, e.Forge(t, m, "forged-metrics"), "/api/members/"+m+"/profile"); st != 401 || reason != string(event.ReasonNotIssued) {
		t.Fatalf("forged token: %d %q", st, reason)
	}
	var fams map[string]*dto.MetricFamily
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		fams = scrape(t, e.APIURL+"/metrics")
		n, _ := value(fams, "custos_detect_alerts_total", map[string]string{"rule": "not_issued"})
		ev, _ := value(fams, "custos_detect_events_total", nil)
		if n >= 1 && ev >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("detection metrics never showed the forged request (alerts %v, events %v)", n, ev)
		}
	}
	return e, fams
}

// The authority's /metrics answers every part's families, clean under
// promlint, and each moves with the traffic that should move it.
func TestMetricsEveryPart(t *testing.T) {
	_, fams := metricsTraffic(t)
	checks := []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"custos_tokens_issued_total", nil, 3},
		{"custos_issuance_duration_seconds", nil, 5},
		{"custos_issuance_refusals_total", map[string]string{"error": "invalid_client"}, 1},
		{"custos_issuance_refusals_total", map[string]string{"error": "invalid_request"}, 1},
		{"custos_http_requests_total", map[string]string{"handler": "POST /v1/tokens", "method": "POST", "code": "200"}, 3},
		{"custos_http_request_duration_seconds", map[string]string{"handler": "POST /v1/tokens"}, 5},
		{"custos_ledger_entries", nil, 3},
		{"custos_ledger_commit_duration_seconds", nil, 3},
		{"custos_ledger_commit_errors_total", nil, 0},
		{"custos_gateway_requests_total", map[string]string{"verdict": "allow"}, 1},
		{"custos_gateway_requests_total", map[string]string{"verdict": "deny", "reason": "not_issued"}, 1},
		{"custos_gateway_overhead_seconds", nil, 2},
		{"custos_detect_events_total", nil, 2},
		{"custos_detect_alerts_total", map[string]string{"rule": "not_issued"}, 1},
		{"custos_detect_lag_seconds", nil, 1},
		{"custos_audit_entries_total", nil, 1},
		{"custos_audit_checkpoint_age_seconds", nil, 0},
		{"custos_audit_checkpoint_readable", nil, 1},
		{"custos_forensics_rows_written_total", nil, 2},
		{"custos_forensics_rows_sealed_total", nil, 0},
		{"custos_forensics_seal_lag_seconds", nil, 0},
		{"custos_store_errors_total", map[string]string{"engine": "sqlite"}, 0},
		{"custos_build_info", nil, 1},
		{"go_goroutines", nil, 1},
		{"go_memstats_heap_alloc_bytes", nil, 1},
		{"process_resident_memory_bytes", nil, 1},
	}
	for _, c := range checks {
		v, ok := value(fams, c.name, c.labels)
		if !ok {
			t.Errorf("%s%v: not exported", c.name, c.labels)
			continue
		}
		if v < c.min {
			t.Errorf("%s%v = %v, want at least %v", c.name, c.labels, v, c.min)
		}
	}
	// A client cannot grow the series: an odd method is one label value.
	if _, ok := value(fams, "custos_http_requests_total", map[string]string{"method": "BREW"}); ok {
		t.Error("method label took a client's value")
	}
}

// dashboardExprs returns every PromQL expression of a Grafana dashboard:
// the panels' targets (rows' nested panels included) and the template
// variables' queries.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		Expr string `json:"expr"`
	}
	type panel struct {
		Title   string   `json:"title"`
		Targets []target `json:"targets"`
		Panels  []panel  `json:"panels"`
	}
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var exprs []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q has a target without an expression", p.Title)
				}
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(string); ok && v.Type == "query" {
			exprs = append(exprs, q)
		}
	}
	return exprs
}

var metricName = regexp.MustCompile(`\b(?:custos|go|process)_[a-zA-Z0-9_]+\b`)

// familyOf maps a series name to its family: a histogram's _bucket, _sum and
// _count series belong to the family without the suffix.
func familyOf(fams map[string]*dto.MetricFamily, name string) (string, bool) {
	if _, ok := fams[name]; ok {
		return name, true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if f, ok := fams[base]; ok && (f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY) {
				return base, true
			}
		}
	}
	return "", false
}

// checkDashboard fails for each metric a dashboard query names that no
// scrape exports, and for a query that names none.
func checkDashboard(t *testing.T, path string, fams map[string]*dto.MetricFamily) {
	t.Helper()
	exprs := dashboardExprs(t, path)
	if len(exprs) < 10 {
		t.Fatalf("%s: only %d queries", path, len(exprs))
	}
	used := map[string]bool{}
	for _, e := range exprs {
		names := metricName.FindAllString(e, -1)
		if len(names) == 0 {
			t.Errorf("query names no custos, go or process metric: %s", e)
		}
		for _, n := range names {
			f, ok := familyOf(fams, n)
			if !ok {
				t.Errorf("dashboard query names %s, which no scrape exports: %s", n, e)
				continue
			}
			used[f] = true
		}
	}
	t.Logf("%d queries over %d metric families", len(exprs), len(used))
}

func TestDashboardQueriesNameExportedMetrics(t *testing.T) {
	// A made-up name is caught, and a histogram's series map to it only
	// when the family is a histogram.
	fams := map[string]*dto.MetricFamily{
		"custos_x_seconds": {Type: dto.MetricType_HISTOGRAM.Enum()},
		"custos_y_total":   {Type: dto.MetricType_COUNTER.Enum()},
	}
	for name, want := range map[string]bool{"custos_x_seconds_bucket": true, "custos_x_seconds_count": true,
		"custos_y_total": true, "custos_y_total_count": false, "custos_z": false} {
		if _, ok := familyOf(fams, name); ok != want {
			t.Errorf("familyOf(%s) = %v, want %v", name, ok, want)
		}
	}
}

// On the scale-out engines the engine families appear too: PostgreSQL
// statement errors, Redis errors and the NATS consumer lag of a detector
// process. Both processes' scrapes pass promlint, and every query of the
// Grafana dashboard names a family one of them exports.
func TestMetricsScaleOutAndDashboard(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pg := "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	adminDB, err := store.OpenPostgres(ctx, pg)
	testenv.Require(t, "PostgreSQL at 127.0.0.1:5432", err)
	schema := fmt.Sprintf("custos_metrics_%d", mrand.Uint32())
	if _, err := adminDB.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	defer func() { adminDB.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); adminDB.Close() }()
	rc := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:6379", DB: 11})
	defer rc.Close()
	testenv.Require(t, "Redis at 127.0.0.1:6379", rc.Ping(ctx).Err())
	requireNATS(t)
	prefix := fmt.Sprintf("custos-metrics-%d", mrand.Uint32())
	defer deleteStreams(prefix)

	e := startWith(t, func(c *config.Config) {
		c.Scale.Store = pg + "&search_path=" + schema
		c.Scale.Redis = "redis://127.0.0.1:6379/11"
		c.Scale.NATS, c.Scale.Prefix, c.Scale.Partitions = "nats://127.0.0.1:4222", prefix, 2
	})
	det := e.Cfg
	det.Role, det.Listen = "detector", servertest.Listen(t).Addr().String()
	go func() {
		for ctx.Err() == nil {
			if err := server.RunRole(ctx, det, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil && ctx.Err() == nil {
				time.Sleep(100 * time.Millisecond) // the probe listener still holds the port: retry
				continue
			}
			return
		}
	}()
	secret := e.Client(t)
	m := e.Member(2)
	tok := e.Issue(t, secret, m)
	if st, _ := e.Get(t, tok, "/api/members/"+m+"/profile"); st != 200 {
		t.Fatalf("issued: %d", st)
	}
	e.Get(t, e.Forge(t, m, "forged-metrics-scale"), "/api/members/"+m+"/profile")
	// A statement PostgreSQL refuses is counted.
	if _, err := e.S.DB.ExecContext(ctx, "SELECT * FROM no_such_table_custos"); err == nil {
		t.Fatal("a query of a missing table succeeded")
	}

	var detFams map[string]*dto.MetricFamily
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := http.Get("http://" + det.Listen + "/healthz"); err == nil {
			detFams = scrape(t, "http://"+det.Listen+"/metrics")
			_, lag := value(detFams, "custos_nats_consumer_pending_messages", nil)
			n, _ := value(detFams, "custos_detect_alerts_total", map[string]string{"rule": "not_issued"})
			if lag && n >= 1 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the detector never exported its consumer lag and the not_issued alert")
		}
	}
	fams := scrape(t, e.APIURL+"/metrics")
	if v, _ := value(fams, "custos_store_errors_total", map[string]string{"engine": "postgres"}); v < 1 {
		t.Errorf("custos_store_errors_total{engine=postgres} = %v after a failed statement", v)
	}
	if _, ok := value(fams, "custos_ledger_backend_errors_total", map[string]string{"engine": "redis"}); !ok {
		t.Error("no custos_ledger_backend_errors_total{engine=redis} on Redis")
	}
	for name, f := range detFams {
		if _, dup := fams[name]; !dup {
			fams[name] = f
		}
	}
	checkDashboard(t, "../deploy/grafana/custos.json", fams)
}
