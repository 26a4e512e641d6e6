package server_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/server/servertest"
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
		{"custos_http_request_duration_seconds", map[string]string{"handler": "GET /metrics"}, 1},
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
