package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/custos-dev/custos/detect"
)

// PagerDuty Events API v2.
const (
	DefaultPagerDutyURL = "https://events.pagerduty.com"
	PagerDutyPath       = "/v2/enqueue"
)

// PagerDutyConfig configures a PagerDuty Events API v2 sink.
type PagerDutyConfig struct {
	URL string // default DefaultPagerDutyURL
	// RoutingKey is the integration key of the service (32 characters),
	// never logged.
	RoutingKey string
	// MinSeverity: alerts below it are not paged (default high).
	MinSeverity detect.Severity
	Source      string // default the host name
	Delivery
}

// PagerDuty triggers one PagerDuty alert per custos incident: the dedup_key
// is the incident ID, so the later alerts of an incident update the same
// page instead of opening new ones. Resolve closes it.
type PagerDuty struct {
	cfg PagerDutyConfig
	q   *queue
}

var pdSeverity = map[detect.Severity]string{
	detect.Critical: "critical", detect.High: "error", detect.Medium: "warning", detect.Low: "info", detect.Info: "info",
}

var sevOrder = map[detect.Severity]int{detect.Info: 1, detect.Low: 2, detect.Medium: 3, detect.High: 4, detect.Critical: 5}

// NewPagerDuty returns a PagerDuty sink delivering in the background.
func NewPagerDuty(cfg PagerDutyConfig) (*PagerDuty, error) {
	if cfg.URL == "" {
		cfg.URL = DefaultPagerDutyURL
	}
	if u, err := url.Parse(cfg.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("pagerduty url must be http(s)://host")
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	if len(cfg.RoutingKey) != 32 {
		return nil, errors.New("pagerduty routing key must be the 32-character integration key")
	}
	if cfg.MinSeverity == "" {
		cfg.MinSeverity = detect.High
	}
	if _, ok := sevOrder[cfg.MinSeverity]; !ok {
		return nil, fmt.Errorf("pagerduty min severity %q is not a severity", cfg.MinSeverity)
	}
	if cfg.Source == "" {
		cfg.Source, _ = os.Hostname()
		if cfg.Source == "" {
			cfg.Source = "custos"
		}
	}
	cfg.Delivery.defaults(1)
	cfg.Batch = 1 // the Events API takes one event per request
	p := &PagerDuty{cfg: cfg}
	p.q = newQueue(cfg.Delivery, p.post)
	return p, nil
}

// pdEvent is an Events API v2 event.
type pdEvent struct {
	RoutingKey  string     `json:"routing_key"`
	EventAction string     `json:"event_action"`
	DedupKey    string     `json:"dedup_key"`
	Payload     *pdPayload `json:"payload,omitempty"`
	Client      string     `json:"client,omitempty"`
}

type pdPayload struct {
	Summary       string         `json:"summary"`
	Source        string         `json:"source"`
	Severity      string         `json:"severity"`
	Timestamp     string         `json:"timestamp,omitempty"`
	Component     string         `json:"component,omitempty"`
	Group         string         `json:"group,omitempty"`
	Class         string         `json:"class,omitempty"`
	CustomDetails map[string]any `json:"custom_details,omitempty"`
}

// DedupKey is the PagerDuty dedup_key of a: its incident, or the alert
// itself when it has none.
func DedupKey(a detect.Alert) string {
	if a.Incident != "" {
		return "custos:" + a.Incident
	}
	return "custos:" + a.ID
}

// Send triggers (or updates) the incident's page when a is severe enough.
func (p *PagerDuty) Send(a detect.Alert) error {
	if sevOrder[a.Severity] < sevOrder[p.cfg.MinSeverity] {
		return nil
	}
	kind, _, _ := strings.Cut(a.Entity, ":")
	summary := fmt.Sprintf("[custos] %s on %s: %s", a.Rule, a.Entity, a.Summary)
	if len(summary) > 1024 {
		summary = summary[:1021] + "..."
	}
	return p.put(pdEvent{EventAction: "trigger", DedupKey: DedupKey(a), Client: "custos", Payload: &pdPayload{
		Summary: summary, Source: p.cfg.Source, Severity: pdSeverity[a.Severity],
		Timestamp: a.Raised.UTC().Format(time.RFC3339Nano), Component: "custos", Group: kind, Class: a.Rule,
		CustomDetails: map[string]any{"alert_id": a.ID, "incident_id": a.Incident, "entity": a.Entity,
			"count": a.Count, "first_seen": a.FirstSeen, "last_seen": a.LastSeen, "attrs": a.Attrs},
	}})
}

// Resolve resolves the page of an incident (its dedup key, see [DedupKey]).
func (p *PagerDuty) Resolve(dedupKey string) error {
	return p.put(pdEvent{EventAction: "resolve", DedupKey: dedupKey})
}

func (p *PagerDuty) put(ev pdEvent) error {
	ev.RoutingKey = p.cfg.RoutingKey
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("failed to encode: %w", err)
	}
	if err := p.q.put(b); err != nil {
		return fmt.Errorf("pagerduty: %w", err)
	}
	return nil
}

// Close delivers what is queued, waiting up to DefaultTimeout.
func (p *PagerDuty) Close() error {
	p.q.close(DefaultTimeout)
	return nil
}

func (p *PagerDuty) post(ctx context.Context, batch [][]byte) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.URL+PagerDutyPath, bytes.NewReader(batch[0]))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		return true, fmt.Errorf("pagerduty: %w", err)
	}
	var r struct {
		Status  string   `json:"status"`
		Message string   `json:"message"`
		Errors  []string `json:"errors"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&r)
	resp.Body.Close()
	if resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK {
		return false, nil
	}
	// The receiver's words are scrubbed of the routing key, should it echo it.
	msg := strings.ReplaceAll(r.Message+" "+strings.Join(r.Errors, "; "), p.cfg.RoutingKey, "[routing key]")
	return retryable(resp.StatusCode), fmt.Errorf("pagerduty answered %d: %s", resp.StatusCode, msg)
}

var _ Sink = (*PagerDuty)(nil)
