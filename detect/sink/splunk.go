package sink

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
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
	"github.com/custos-dev/custos/event"
)

// Splunk HEC paths and defaults.
const (
	HECEventPath      = "/services/collector/event"
	HECAckPath        = "/services/collector/ack"
	DefaultAckTimeout = 30 * time.Second
)

// SplunkConfig configures a Splunk HTTP Event Collector sink.
type SplunkConfig struct {
	// URL is the collector's base URL (https://splunk.example:8088).
	URL string
	// Token is the HEC token, sent as "Authorization: Splunk TOKEN" and
	// never logged.
	Token  string
	Index  string
	Source string // default "custos"
	Format Format
	// Acks turns on indexer acknowledgement: each batch is sent on a
	// channel and polled at /services/collector/ack until indexed; a batch
	// not acknowledged within AckTimeout is sent again.
	Acks       bool
	AckTimeout time.Duration
	Delivery
}

// Splunk posts alerts (sourcetype custos:alert, or ocsf:detection_finding)
// and, when attached to the bus, access events (custos:access or
// ocsf:http_activity) to a Splunk HTTP Event Collector in batches.
type Splunk struct {
	cfg     SplunkConfig
	host    string
	channel string
	q       *queue
}

// NewSplunk returns a HEC sink delivering in the background.
func NewSplunk(cfg SplunkConfig) (*Splunk, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("splunk url must be http(s)://host:port")
	}
	if cfg.Token == "" {
		return nil, errors.New("splunk needs a HEC token")
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	if cfg.Source == "" {
		cfg.Source = "custos"
	}
	if cfg.Format == "" {
		cfg.Format = Native
	}
	cfg.AckTimeout = cmp.Or(cfg.AckTimeout, DefaultAckTimeout)
	cfg.Delivery.defaults(DefaultBatch)
	h, _ := os.Hostname()
	s := &Splunk{cfg: cfg, host: h}
	if cfg.Acks {
		s.channel = uuid()
	}
	s.q = newQueue(cfg.Delivery, s.post)
	return s, nil
}

// uuid returns a random RFC 9562 version 4 UUID, the form HEC wants for a channel.
func uuid() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// hecEvent is one event in a HEC request body.
type hecEvent struct {
	Time       float64         `json:"time"`
	Host       string          `json:"host,omitempty"`
	Source     string          `json:"source"`
	SourceType string          `json:"sourcetype"`
	Index      string          `json:"index,omitempty"`
	Event      json.RawMessage `json:"event"`
}

func (s *Splunk) enqueue(t time.Time, sourcetype string, v any) error {
	body, err := s.cfg.Format.Encode(v)
	if err != nil {
		return err
	}
	b, err := json.Marshal(hecEvent{Time: float64(t.UnixMilli()) / 1000, Host: s.host, Source: s.cfg.Source,
		SourceType: sourcetype, Index: s.cfg.Index, Event: body})
	if err != nil {
		return fmt.Errorf("failed to encode: %w", err)
	}
	if err := s.q.put(b); err != nil {
		return fmt.Errorf("splunk: %w", err)
	}
	return nil
}

// Send queues a.
func (s *Splunk) Send(a detect.Alert) error {
	st := "custos:alert"
	if s.cfg.Format == OCSF {
		st = "ocsf:detection_finding"
	}
	return s.enqueue(a.Raised, st, a)
}

// SendEvent queues e.
func (s *Splunk) SendEvent(e event.Access) error {
	st := "custos:access"
	if s.cfg.Format == OCSF {
		st = "ocsf:http_activity"
	}
	return s.enqueue(e.Time, st, e)
}

// Close delivers what is queued, waiting up to DefaultTimeout.
func (s *Splunk) Close() error {
	s.q.close(DefaultTimeout)
	return nil
}

// hecReply is the collector's answer.
type hecReply struct {
	Text  string `json:"text"`
	Code  int    `json:"code"`
	AckID *int64 `json:"ackId"`
}

func (s *Splunk) request(ctx context.Context, path string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Splunk "+s.cfg.Token)
	req.Header.Set("Content-Type", "application/json")
	if s.channel != "" {
		req.Header.Set("X-Splunk-Request-Channel", s.channel)
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		// The error names the URL, which holds no secret; the token is a header.
		return nil, fmt.Errorf("splunk: %w", err)
	}
	return resp, nil
}

// post sends one batch: the events' JSON objects one after another, as HEC takes them.
func (s *Splunk) post(ctx context.Context, batch [][]byte) (bool, error) {
	resp, err := s.request(ctx, HECEventPath, bytes.Join(batch, []byte("\n")))
	if err != nil {
		return true, err
	}
	var r hecReply
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&r)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		text := strings.ReplaceAll(r.Text, s.cfg.Token, "[token]")
		return retryable(resp.StatusCode), fmt.Errorf("splunk answered %d (code %d: %s)", resp.StatusCode, r.Code, text)
	}
	if !s.cfg.Acks {
		return false, nil
	}
	if r.AckID == nil {
		return false, errors.New("splunk: acknowledgement asked for but the collector returned no ackId (is it enabled on the token?)")
	}
	return s.waitAck(ctx, *r.AckID)
}

// waitAck polls the ack endpoint until id is indexed; an ack that does not
// come in time sends the batch again (at least once).
func (s *Splunk) waitAck(ctx context.Context, id int64) (bool, error) {
	deadline := time.Now().Add(s.cfg.AckTimeout)
	poll := 100 * time.Millisecond
	body, _ := json.Marshal(map[string][]int64{"acks": {id}})
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-time.After(poll):
		}
		poll = min(2*poll, 2*time.Second)
		resp, err := s.request(ctx, HECAckPath+"?channel="+url.QueryEscape(s.channel), body)
		if err != nil {
			continue
		}
		var r struct {
			Acks map[string]bool `json:"acks"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&r)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && r.Acks[fmt.Sprint(id)] {
			return false, nil
		}
	}
	return true, fmt.Errorf("splunk: batch (ackId %d) not acknowledged within %s", id, s.cfg.AckTimeout)
}

var (
	_ Sink      = (*Splunk)(nil)
	_ EventSink = (*Splunk)(nil)
)
