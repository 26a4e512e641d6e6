package detect

import (
	"strings"
	"time"
)

// Alert is one rule firing for one entity within one deduplication window.
// Later matches in the same window update it (Count, LastSeen, Samples)
// instead of raising another.
type Alert struct {
	ID        string            `json:"id"`
	Rule      string            `json:"rule"`
	Severity  Severity          `json:"severity"`
	Entity    string            `json:"entity"` // kind:value, e.g. "ip:203.0.113.9", "kid:k1", "subject:1001"
	Summary   string            `json:"summary"`
	FirstSeen time.Time         `json:"first_seen"` // event time of the first matching event
	LastSeen  time.Time         `json:"last_seen"`
	Raised    time.Time         `json:"raised"` // event time at which the alert was raised
	Count     int64             `json:"count"`  // matching events in this window
	Samples   []string          `json:"sample_event_ids"`
	Incident  string            `json:"incident_id"`
	Attrs     map[string]string `json:"attrs,omitempty"` // kid, jti, subject, src_ip, route, country of the raising event
}

// Incident groups related alerts: those sharing a rule or an entity within
// the incident window. Awareness is when the first of them was raised.
type Incident struct {
	ID        string    `json:"id"`
	Awareness time.Time `json:"awareness"`
	LastSeen  time.Time `json:"last_seen"`
	Severity  Severity  `json:"severity"` // the highest of its alerts
	Rules     []string  `json:"rules"`
	Entities  []string  `json:"entities"`
	Alerts    []string  `json:"alert_ids"`
}

// Finding is a signal raised from outside the event stream (the workforce
// lifecycle, an after-the-fact ledger check) through [Engine.Raise].
type Finding struct {
	Rule     string
	Severity Severity // default high
	Entity   string
	Time     time.Time // default now
	Summary  string
	EventID  string
	Attrs    map[string]string
}

var sevRank = map[Severity]int{Info: 1, Low: 2, Medium: 3, High: 4, Critical: 5}

// ocsfSeverity maps to OCSF severity_id.
var ocsfSeverity = map[Severity]int{Info: 1, Low: 2, Medium: 3, High: 4, Critical: 5}

// OCSF returns the alert as an OCSF 1.x Detection Finding (class_uid 2004).
func (a Alert) OCSF() map[string]any {
	kind, val, _ := strings.Cut(a.Entity, ":")
	obs := []map[string]any{{"name": kind, "value": val, "type_id": 0, "type": "Other"}}
	if ip := a.Attrs["src_ip"]; ip != "" {
		obs = append(obs, map[string]any{"name": "src_endpoint.ip", "value": ip, "type_id": 2, "type": "IP Address"})
	}
	if sub := a.Attrs["subject"]; sub != "" {
		obs = append(obs, map[string]any{"name": "user.uid", "value": sub, "type_id": 4, "type": "User Name"})
	}
	return map[string]any{
		"category_uid":  2,
		"category_name": "Findings",
		"class_uid":     2004,
		"class_name":    "Detection Finding",
		"activity_id":   1,
		"activity_name": "Create",
		"type_uid":      200401,
		"type_name":     "Detection Finding: Create",
		"time":          a.Raised.UnixMilli(),
		"severity_id":   ocsfSeverity[a.Severity],
		"severity":      strings.ToUpper(string(a.Severity[:1])) + string(a.Severity[1:]),
		"status_id":     1,
		"status":        "New",
		"count":         a.Count,
		"message":       a.Summary,
		"metadata": map[string]any{
			"version":         "1.3.0",
			"product":         map[string]any{"name": "custos", "vendor_name": "custos"},
			"correlation_uid": a.Incident,
		},
		"finding_info": map[string]any{
			"uid":                  a.ID,
			"title":                a.Rule,
			"desc":                 a.Summary,
			"first_seen_time":      a.FirstSeen.UnixMilli(),
			"last_seen_time":       a.LastSeen.UnixMilli(),
			"analytic":             map[string]any{"name": a.Rule, "type_id": 1, "type": "Rule"},
			"related_events_count": a.Count,
		},
		"evidences":   []map[string]any{{"data": map[string]any{"request_ids": a.Samples}}},
		"observables": obs,
	}
}
