package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
)

// Over the running server: POST /v1/events refuses a body with no valid line
// and publishes nothing from it; a log line that claims not_issued for a kid
// custos never knew raises the medium reported_not_issued finding, never the
// critical not_issued one, and the event it stores says it was reported by a
// log.
func TestIngestedClaimsOverHTTP(t *testing.T) {
	e := start(t)
	arrived := e.S.Bus.Subscribe(1<<10, true)
	defer arrived.Close()
	post := func(query, body string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", e.APIURL+"/v1/events"+query, bytes.NewReader([]byte(body)))
		req.Header.Set("Authorization", "Bearer "+e.API.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return resp.StatusCode, m
	}
	for _, body := range []string{"", "\n\n", "garbage", "{", `{"time":"2025-06-24T03:00:00Z","subject":"1","SUBJECT":"2"}`, "\x00\x01"} {
		if st, ans := post("", body); st != 400 || ans["error"] != "invalid_request" {
			t.Fatalf("body %q: %d %v, want 400 invalid_request", body, st, ans)
		}
	}
	select {
	case b := <-arrived.C:
		t.Fatalf("a refused body published %+v", b)
	case <-time.After(200 * time.Millisecond):
	}

	now := time.Now().UTC().Format(time.RFC3339Nano)
	claim := `{"time":"` + now + `","gateway":"edge-log","request_id":"claim-1","method":"GET","path":"/api/members/1/profile","status":401,"src_ip":"203.0.113.50","verdict":"deny","reason":"not_issued","token":{"kid":"kid-custos-never-knew","jti":"claimed-jti"}}`
	st, ans := post("?format=custos", claim+"\nnot json\n")
	if st != 200 || ans["events"] != float64(1) || ans["malformed"] != float64(1) {
		t.Fatalf("claim: %d %v, want 200 with 1 event and 1 malformed line", st, ans)
	}
	waitEvent(t, arrived, func(ev event.Access) bool {
		if ev.RequestID != "claim-1" {
			return false
		}
		if ev.Reported != event.ReportedLog {
			t.Fatalf("ingested event reported %q, want %q", ev.Reported, event.ReportedLog)
		}
		return true
	})
	var reported bool
	for deadline := time.Now().Add(5 * time.Second); !reported && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, a := range e.S.Detect.Alerts() {
			reported = reported || a.Rule == detect.RuleReportedNotIssued && a.Severity == detect.Medium
		}
	}
	if !reported {
		t.Fatalf("no medium reported_not_issued alert for a claimed not_issued (alerts %+v)", e.S.Detect.Alerts())
	}
	for _, a := range e.S.Detect.Alerts() {
		if a.Rule == detect.RuleNotIssued || a.Severity == detect.Critical {
			t.Fatalf("a log's claim raised %s (%s)", a.Rule, a.Severity)
		}
	}
}
