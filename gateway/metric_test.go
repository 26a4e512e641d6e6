package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

type dtoMetric struct{ dto.Metric }

// The overhead histogram counts every request, allowed or refused, and
// leaves the upstream's time out.
func TestOverheadExcludesUpstream(t *testing.T) {
	e := newEnv(t, testConfig())
	good := e.issue(t, claimsFor("m-1"))
	slow := e.g.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(30 * time.Millisecond)
		io.WriteString(w, "{}")
	}))
	for _, tok := range []string{good, good, "", "x.y.z"} {
		r := httptest.NewRequest("GET", addr, nil)
		r.RemoteAddr = "127.0.0.1:40000"
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		slow.ServeHTTP(httptest.NewRecorder(), r)
	}
	m := &dtoMetric{}
	if err := e.g.Overhead().Write(&m.Metric); err != nil {
		t.Fatal(err)
	}
	h := m.GetHistogram()
	if h.GetSampleCount() != 4 {
		t.Fatalf("%d requests observed, want 4", h.GetSampleCount())
	}
	if h.GetSampleSum() <= 0 || h.GetSampleSum() >= 0.030 {
		t.Fatalf("overhead sum %v s: the upstream's 2 × 30 ms must not be in it", h.GetSampleSum())
	}
}
