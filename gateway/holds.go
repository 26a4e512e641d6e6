package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Paths of the authority's containment feed.
const (
	ContainmentPath       = "/v1/containment"
	ContainmentStreamPath = "/v1/containment/stream"
	// HoldHeartbeat is how often the containment stream sends an empty
	// line when nothing happens.
	HoldHeartbeat = 2 * time.Second
	maxHoldLine   = 8 << 10
)

// Actions of holds: a blocked source prefix, or a blocked country (every
// source the gateway's GeoIP databases place in it).
const (
	HoldBlockSource  = "block_source"
	HoldBlockCountry = "block_country"
)

// Hold is one containment measure that every gateway enforces beyond the
// ledger and the key set: a blocked source or a blocked country. It names
// its evidence.
type Hold struct {
	ID       string            `json:"id"`
	Action   string            `json:"action"`
	Target   string            `json:"target"` // the blocked prefix, e.g. 198.51.100.7/32, or country, e.g. US
	Until    time.Time         `json:"until"`
	Reason   string            `json:"reason"`
	Created  time.Time         `json:"created"`
	Actor    string            `json:"actor,omitempty"`
	AlertID  string            `json:"alert_id,omitempty"`
	Rule     string            `json:"rule,omitempty"`
	Evidence map[string]string `json:"evidence,omitempty"`
}

// ErrBadHold marks a hold that does not parse or names no valid target.
var ErrBadHold = errors.New("malformed containment hold")

// ParseHold reads one hold (a line of the stream) strictly: unknown fields,
// trailing data, an unknown action, or a target that is not a prefix
// (block_source) or exactly two uppercase letters (block_country) are
// refused, so that a gateway never half-applies what it does not understand.
func ParseHold(b []byte) (Hold, error) {
	var h Hold
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return Hold{}, fmt.Errorf("%w: %v", ErrBadHold, err)
	}
	if dec.More() {
		return Hold{}, fmt.Errorf("%w: trailing data", ErrBadHold)
	}
	switch h.Action {
	case HoldBlockCountry:
		if _, err := h.Country(); err != nil {
			return Hold{}, err
		}
	default:
		if _, err := h.Prefix(); err != nil {
			return Hold{}, err
		}
	}
	if h.ID == "" || h.Until.IsZero() {
		return Hold{}, fmt.Errorf("%w: no id or end", ErrBadHold)
	}
	return h, nil
}

// Prefix is the blocked prefix of a block_source hold.
func (h Hold) Prefix() (netip.Prefix, error) {
	if h.Action != HoldBlockSource {
		return netip.Prefix{}, fmt.Errorf("%w: unknown action %q", ErrBadHold, h.Action)
	}
	p, err := netip.ParsePrefix(h.Target)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: target %q: %v", ErrBadHold, h.Target, err)
	}
	return p, nil
}

// Country is the blocked country of a block_country hold: exactly two
// uppercase ASCII letters (ISO 3166-1 alpha-2).
func (h Hold) Country() (string, error) {
	if h.Action != HoldBlockCountry {
		return "", fmt.Errorf("%w: unknown action %q", ErrBadHold, h.Action)
	}
	if !isCountryCode(h.Target) {
		return "", fmt.Errorf("%w: target %q is not a two-letter uppercase country code", ErrBadHold, h.Target)
	}
	return h.Target, nil
}

func isCountryCode(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// Apply enforces h at g. A hold never shortens another on the same target
// (an operator's one-hour hold on a country detection holds for a day, or
// the same holds replayed in another order): the later end stands.
func (g *Gateway) Apply(h Hold) error {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	if h.Action == HoldBlockCountry {
		cc, err := h.Country()
		if err != nil {
			return err
		}
		g.blockMu.RLock()
		cur, ok := g.countries[cc]
		g.blockMu.RUnlock()
		if !ok || h.Until.After(cur.Until) {
			g.BlockCountry(cc, h.Until, h.Reason)
		}
		return nil
	}
	p, err := h.Prefix()
	if err != nil {
		return err
	}
	g.blockMu.RLock()
	cur, ok := g.blocks[p.Masked()]
	g.blockMu.RUnlock()
	if !ok || h.Until.After(cur.Until) {
		g.Block(p, h.Until, h.Reason)
	}
	return nil
}

// HoldStreamHandler serves the containment stream: every hold in force
// (snapshot), then each new hold as it is made, one JSON line each, and an
// empty line every HoldHeartbeat. subscribe registers a callback for new
// holds; a client that falls 256 holds behind is disconnected and catches up
// from the snapshot when it reconnects.
func HoldStreamHandler(snapshot func(context.Context) ([]Hold, error), subscribe func(func(Hold)) (unsubscribe func())) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch, lagged, unsub := subscribeLagging(subscribe, 256)
		defer unsub()
		// Subscribed before the snapshot is read: a hold made meanwhile
		// is sent twice rather than never.
		hs, err := snapshot(r.Context())
		if err != nil {
			http.Error(w, "containment state unavailable", http.StatusServiceUnavailable)
			return
		}
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		enc := json.NewEncoder(w)
		for _, h := range hs {
			if enc.Encode(h) != nil {
				return
			}
		}
		if _, err := io.WriteString(w, "\n"); err != nil || rc.Flush() != nil {
			return
		}
		serveLines(w, r, rc, ch, lagged, HoldHeartbeat, func(h Hold) any { return h })
	})
}

// RemoteHolds follows an authority's containment stream for a gateway
// running as its own process, and applies every hold to the gateway: on
// each (re)connection the stream starts with every hold in force, so what
// was missed while disconnected is caught up before anything new.
type RemoteHolds struct {
	bases  []string
	cur    atomic.Int32
	client *http.Client
	g      *Gateway

	lastHeard atomic.Int64 // unix nanoseconds
	applied   atomic.Uint64
	OnError   func(error)
}

// NewRemoteHolds follows the first of bases, failing over to the others.
func NewRemoteHolds(bases []string, client *http.Client, g *Gateway) (*RemoteHolds, error) {
	if len(bases) == 0 {
		return nil, fmt.Errorf("%w: no authority URL", ErrConfig)
	}
	rh := &RemoteHolds{client: client, g: g}
	for _, b := range bases {
		u, err := url.Parse(b)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: authority URL %q", ErrConfig, b)
		}
		rh.bases = append(rh.bases, strings.TrimRight(b, "/"))
	}
	if rh.client == nil {
		rh.client = &http.Client{}
	}
	return rh, nil
}

// Fresh reports whether the stream was heard from within three heartbeats.
func (rh *RemoteHolds) Fresh() bool {
	return time.Now().UnixNano()-rh.lastHeard.Load() < int64(3*HoldHeartbeat)
}

// Applied counts the holds applied.
func (rh *RemoteHolds) Applied() uint64 { return rh.applied.Load() }

// Run follows the stream until ctx ends, reconnecting with backoff.
func (rh *RemoteHolds) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := rh.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if rh.OnError != nil {
			rh.OnError(fmt.Errorf("containment stream: %w", err))
		}
		rh.cur.Store((rh.cur.Load() + 1) % int32(len(rh.bases)))
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func (rh *RemoteHolds) follow(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	base := rh.bases[int(rh.cur.Load())%len(rh.bases)]
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+ContainmentStreamPath, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	c := *rh.client
	c.Timeout = 0
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	// A stream that goes silent is cut, so that Run reconnects.
	watchdog := time.AfterFunc(3*HoldHeartbeat, cancel)
	defer watchdog.Stop()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 1024), maxHoldLine)
	for sc.Scan() {
		watchdog.Reset(3 * HoldHeartbeat)
		rh.lastHeard.Store(time.Now().UnixNano())
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		h, err := ParseHold(line)
		if err != nil {
			return err // a corrupt stream is not trusted any further
		}
		if err := rh.g.Apply(h); err != nil {
			return err
		}
		rh.applied.Add(1)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}
