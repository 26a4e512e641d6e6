package sink

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
)

const hecToken = "8e1f0c2a-5b7d-4c1e-9f3a-2d6b8e4c7a10"

// hec is a Splunk HTTP Event Collector as far as a sender sees it: token
// auth, concatenated JSON events, the error codes and, with a channel,
// indexer acknowledgement.
type hec struct {
	mu       sync.Mutex
	events   []map[string]any
	requests int
	busy     atomic.Int32 // answer 503 "Server is busy" (code 9) this many times
	nextAck  int64
	acked    map[int64]int // polls seen per ackId; acknowledged on the second
	pending  map[int64][]map[string]any
	channels map[string]bool
}

func newHEC() *hec {
	return &hec{acked: map[int64]int{}, pending: map[int64][]map[string]any{}, channels: map[string]bool{}}
}

func hecReplyJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (h *hec) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		hecReplyJSON(w, 405, map[string]any{"text": "Method not allowed", "code": 7})
		return
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		hecReplyJSON(w, 401, map[string]any{"text": "Token is required", "code": 2})
		return
	}
	if auth != "Splunk "+hecToken {
		hecReplyJSON(w, 403, map[string]any{"text": "Invalid token", "code": 4})
		return
	}
	ch := r.Header.Get("X-Splunk-Request-Channel")
	switch r.URL.Path {
	case HECAckPath:
		if r.URL.Query().Get("channel") != ch || ch == "" {
			hecReplyJSON(w, 400, map[string]any{"text": "Data channel is missing", "code": 10})
			return
		}
		var req struct{ Acks []int64 }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			hecReplyJSON(w, 400, map[string]any{"text": "Invalid data format", "code": 6})
			return
		}
		h.mu.Lock()
		out := map[string]bool{}
		for _, id := range req.Acks {
			h.acked[id]++
			done := h.acked[id] >= 2
			if done && h.pending[id] != nil {
				h.events = append(h.events, h.pending[id]...)
				delete(h.pending, id)
			}
			out[fmt.Sprint(id)] = done
		}
		h.mu.Unlock()
		hecReplyJSON(w, 200, map[string]any{"acks": out})
		return
	case HECEventPath:
	default:
		hecReplyJSON(w, 404, map[string]any{"text": "The requested URL was not found on this server.", "code": 404})
		return
	}
	h.mu.Lock()
	h.requests++
	h.mu.Unlock()
	if h.busy.Add(-1) >= 0 {
		hecReplyJSON(w, 503, map[string]any{"text": "Server is busy", "code": 9})
		return
	}
	dec := json.NewDecoder(r.Body)
	var batch []map[string]any
	for {
		var ev map[string]any
		err := dec.Decode(&ev)
		if err == io.EOF {
			break
		}
		if err != nil {
			hecReplyJSON(w, 400, map[string]any{"text": "Invalid data format", "code": 6, "invalid-event-number": len(batch)})
			return
		}
		if _, ok := ev["event"]; !ok {
			hecReplyJSON(w, 400, map[string]any{"text": "Event field is required", "code": 12, "invalid-event-number": len(batch)})
			return
		}
		if _, ok := ev["time"].(float64); !ok || ev["sourcetype"] == "" {
			hecReplyJSON(w, 400, map[string]any{"text": "Invalid data format", "code": 6})
			return
		}
		batch = append(batch, ev)
	}
	if len(batch) == 0 {
		hecReplyJSON(w, 400, map[string]any{"text": "No data", "code": 5})
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch == "" {
		h.events = append(h.events, batch...)
		hecReplyJSON(w, 200, map[string]any{"text": "Success", "code": 0})
		return
	}
	h.channels[ch] = true
	id := h.nextAck
	h.nextAck++
	h.pending[id] = batch
	hecReplyJSON(w, 200, map[string]any{"text": "Success", "code": 0, "ackId": id})
}

func (h *hec) snapshot() ([]map[string]any, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]any(nil), h.events...), h.requests
}

// errLog collects what a sink reports, as a logger would print it.
type errLog struct {
	mu   sync.Mutex
	errs []string
}

func (l *errLog) add(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err.Error())
	l.mu.Unlock()
}

func (l *errLog) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.errs, "\n")
}

func fastDelivery(l *errLog) Delivery {
	return Delivery{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, FlushInterval: 20 * time.Millisecond, OnError: l.add}
}

func TestSplunkHEC(t *testing.T) {
	t.Run("ok/batches_in_order_after_busy", func(t *testing.T) {
		h := newHEC()
		h.busy.Store(2)
		srv := httptest.NewServer(h)
		defer srv.Close()
		var log errLog
		d := fastDelivery(&log)
		d.Batch = 100
		d.FlushInterval = 200 * time.Millisecond
		s, err := NewSplunk(SplunkConfig{URL: srv.URL + "/", Token: hecToken, Index: "security", Delivery: d})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 250; i++ {
			a := alert(0)
			a.ID = fmt.Sprintf("al-%03d", i)
			if err := s.Send(a); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "250 events", func() bool { ev, _ := h.snapshot(); return len(ev) == 250 })
		s.Close()
		evs, reqs := h.snapshot()
		if reqs > 2+4 { // two busy answers, then about three batches
			t.Errorf("%d requests for 250 alerts: not batched", reqs)
		}
		for i, ev := range evs {
			body := ev["event"].(map[string]any)
			if body["id"] != fmt.Sprintf("al-%03d", i) || ev["sourcetype"] != "custos:alert" || ev["index"] != "security" || ev["source"] != "custos" {
				t.Fatalf("event %d: %v", i, ev)
			}
		}
		if !strings.Contains(log.all(), "Server is busy") {
			t.Errorf("busy answers not reported: %q", log.all())
		}
		if strings.Contains(log.all(), hecToken) {
			t.Fatal("token in the error log")
		}
	})
	t.Run("ok/acks_and_ocsf_events", func(t *testing.T) {
		h := newHEC()
		srv := httptest.NewServer(h)
		defer srv.Close()
		var log errLog
		s, err := NewSplunk(SplunkConfig{URL: srv.URL, Token: hecToken, Acks: true, Format: OCSF, Delivery: fastDelivery(&log)})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		_ = s.Send(alert(0))
		_ = s.SendEvent(event.Access{Time: time.Now(), Method: "PATCH", Path: "/x", Verdict: event.Allow, Status: 200})
		waitFor(t, "acknowledged events", func() bool { ev, _ := h.snapshot(); return len(ev) == 2 })
		evs, _ := h.snapshot()
		types := map[any]float64{}
		for _, ev := range evs {
			types[ev["sourcetype"]] = ev["event"].(map[string]any)["class_uid"].(float64)
		}
		if types["ocsf:detection_finding"] != 2004 || types["ocsf:http_activity"] != 4002 {
			t.Fatalf("%v", types)
		}
		if len(h.channels) != 1 {
			t.Fatalf("channels %v", h.channels)
		}
	})
	t.Run("fail/wrong_token_is_dropped_not_retried_and_not_logged", func(t *testing.T) {
		h := newHEC()
		srv := httptest.NewServer(h)
		defer srv.Close()
		var log errLog
		wrong := "00000000-dead-beef-0000-000000000000"
		s, _ := NewSplunk(SplunkConfig{URL: srv.URL, Token: wrong, Delivery: fastDelivery(&log)})
		_ = s.Send(alert(0))
		waitFor(t, "the refusal", func() bool { return strings.Contains(log.all(), "dropped") })
		s.Close()
		if _, reqs := h.snapshot(); reqs != 0 {
			t.Fatalf("%d event requests passed auth", reqs)
		}
		if !strings.Contains(log.all(), "403") || strings.Contains(log.all(), wrong) {
			t.Fatalf("log %q", log.all())
		}
	})
	t.Run("fail/config", func(t *testing.T) {
		for _, c := range []SplunkConfig{{URL: "splunk:8088", Token: "t"}, {URL: "https://s:8088"}, {URL: "ftp://s", Token: "t"}} {
			if _, err := NewSplunk(c); err == nil {
				t.Errorf("accepted %+v", c)
			}
		}
	})
	t.Run("fail/closed", func(t *testing.T) {
		s, _ := NewSplunk(SplunkConfig{URL: "http://127.0.0.1:1", Token: hecToken, Delivery: Delivery{MaxAttempts: 1}})
		s.Close()
		if err := s.Send(alert(0)); !errors.Is(err, ErrClosed) {
			t.Fatalf("%v", err)
		}
	})
}

const pdKey = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12"

// pagerDuty validates Events API v2 requests as the service documents them
// and records the accepted ones.
type pagerDuty struct {
	mu       sync.Mutex
	accepted []map[string]any
	throttle atomic.Int32 // answer 429 this many times
	fail5xx  atomic.Int32 // then 500 this many times
	attempts atomic.Int32
}

func (p *pagerDuty) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.attempts.Add(1)
	reply := func(status int, v map[string]any) { hecReplyJSON(w, status, v) }
	if r.Method != http.MethodPost || r.URL.Path != "/v2/enqueue" {
		reply(404, map[string]any{"status": "not found"})
		return
	}
	if p.throttle.Add(-1) >= 0 {
		reply(429, map[string]any{"status": "throttle event", "message": "Requests for this service are arriving too quickly"})
		return
	}
	if p.fail5xx.Add(-1) >= 0 {
		reply(500, map[string]any{"status": "error"})
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		reply(400, map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": []string{"content type"}})
		return
	}
	var ev map[string]any
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&ev); err != nil {
		reply(400, map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": []string{"JSON parse error"}})
		return
	}
	var errs []string
	if k, _ := ev["routing_key"].(string); len(k) != 32 {
		errs = append(errs, "Length of 'routing_key' is incorrect (should be 32 characters)")
	}
	action, _ := ev["event_action"].(string)
	if action != "trigger" && action != "acknowledge" && action != "resolve" {
		errs = append(errs, "'event_action' is invalid")
	}
	if dk, _ := ev["dedup_key"].(string); len(dk) > 255 || (action != "trigger" && dk == "") {
		errs = append(errs, "'dedup_key' is invalid")
	}
	if action == "trigger" {
		pl, _ := ev["payload"].(map[string]any)
		sum, _ := pl["summary"].(string)
		src, _ := pl["source"].(string)
		sev, _ := pl["severity"].(string)
		if sum == "" || len(sum) > 1024 {
			errs = append(errs, "'payload.summary' is missing or too long")
		}
		if src == "" {
			errs = append(errs, "'payload.source' is missing")
		}
		if !strings.Contains(" critical error warning info ", " "+sev+" ") {
			errs = append(errs, "'payload.severity' is invalid")
		}
		if ts, ok := pl["timestamp"].(string); ok {
			if _, err := time.Parse(time.RFC3339, ts); err != nil {
				errs = append(errs, "'payload.timestamp' is invalid")
			}
		}
	}
	if errs != nil {
		reply(400, map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": errs})
		return
	}
	p.mu.Lock()
	p.accepted = append(p.accepted, ev)
	p.mu.Unlock()
	reply(202, map[string]any{"status": "success", "message": "Event processed", "dedup_key": ev["dedup_key"]})
}

func (p *pagerDuty) got() []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]map[string]any(nil), p.accepted...)
}

func TestPagerDuty(t *testing.T) {
	t.Run("ok/trigger_dedup_resolve_with_retries", func(t *testing.T) {
		pd := &pagerDuty{}
		pd.throttle.Store(1)
		pd.fail5xx.Store(1)
		srv := httptest.NewServer(pd)
		defer srv.Close()
		var log errLog
		p, err := NewPagerDuty(PagerDutyConfig{URL: srv.URL, RoutingKey: pdKey, Source: "custos-1", Delivery: fastDelivery(&log)})
		if err != nil {
			t.Fatal(err)
		}
		first, second, minor := alert(0), alert(1), alert(2)
		second.Rule, second.Severity = "foreign_origin", detect.High
		minor.Severity = detect.Medium // below the default min severity: not paged
		minor.Incident = "inc-2"
		for _, a := range []detect.Alert{first, second, minor} {
			if err := p.Send(a); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Resolve(DedupKey(first)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "three accepted events", func() bool { return len(pd.got()) == 3 })
		p.Close()
		got := pd.got()
		want := []struct{ action, sev string }{{"trigger", "critical"}, {"trigger", "error"}, {"resolve", ""}}
		for i, ev := range got {
			if ev["dedup_key"] != "custos:inc-1" || ev["event_action"] != want[i].action {
				t.Fatalf("event %d: %v", i, ev)
			}
			if pl, ok := ev["payload"].(map[string]any); ok && (pl["severity"] != want[i].sev || pl["source"] != "custos-1") {
				t.Fatalf("event %d payload %v", i, pl)
			}
		}
		if n := pd.attempts.Load(); n != 5 {
			t.Errorf("%d attempts, want 3 accepted after one 429 and one 500", n)
		}
		if l := log.all(); !strings.Contains(l, "429") || !strings.Contains(l, "500") || strings.Contains(l, pdKey) {
			t.Fatalf("log %q", l)
		}
	})
	t.Run("fail/refusal_not_retried_key_not_logged", func(t *testing.T) {
		pd := &pagerDuty{}
		srv := httptest.NewServer(pd)
		defer srv.Close()
		var log errLog
		p, _ := NewPagerDuty(PagerDutyConfig{URL: srv.URL, RoutingKey: pdKey, Delivery: fastDelivery(&log)})
		a := alert(0)
		a.Incident = strings.Repeat("i", 300) // dedup_key over PagerDuty's 255
		_ = p.Send(a)
		waitFor(t, "the refusal", func() bool { return strings.Contains(log.all(), "dropped") })
		p.Close()
		if pd.attempts.Load() != 1 || !strings.Contains(log.all(), "dedup_key") || strings.Contains(log.all(), pdKey) {
			t.Fatalf("%d attempts, log %q", pd.attempts.Load(), log.all())
		}
	})
	t.Run("fail/config", func(t *testing.T) {
		for _, c := range []PagerDutyConfig{{RoutingKey: "short"}, {RoutingKey: pdKey, URL: "events.pagerduty.com"}, {RoutingKey: pdKey, MinSeverity: "urgent"}} {
			if _, err := NewPagerDuty(c); err == nil {
				t.Errorf("accepted %+v", c)
			}
		}
	})
}
