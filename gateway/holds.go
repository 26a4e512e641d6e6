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
// the same holds replayed in another order): the later end stands. A hold
// released earlier (Release) is not applied again.
func (g *Gateway) Apply(h Hold) error {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	if err := h.check(); err != nil {
		return err
	}
	g.pruneHolds()
	if _, gone := g.released[h.ID]; gone {
		return nil
	}
	if cur, ok := g.holds[h.ID]; !ok || h.Until.After(cur.Until) {
		g.holds[h.ID] = h
	}
	g.enforce(h)
	return nil
}

func (h Hold) check() error {
	if h.Action == HoldBlockCountry {
		_, err := h.Country()
		return err
	}
	_, err := h.Prefix()
	return err
}

// enforce extends the block on h's target to h's end if that is later;
// under applyMu, h checked.
func (g *Gateway) enforce(h Hold) {
	if h.Action == HoldBlockCountry {
		g.blockMu.RLock()
		cur, ok := g.countries[h.Target]
		g.blockMu.RUnlock()
		if !ok || h.Until.After(cur.Until) {
			g.BlockCountry(h.Target, h.Until, h.Reason)
		}
		return
	}
	p, _ := h.Prefix()
	g.blockMu.RLock()
	cur, ok := g.blocks[p.Masked()]
	g.blockMu.RUnlock()
	if !ok || h.Until.After(cur.Until) {
		g.Block(p, h.Until, h.Reason)
	}
}

// pruneHolds forgets the holds and releases whose end has passed; under
// applyMu.
func (g *Gateway) pruneHolds() {
	now := g.now()
	for id, h := range g.holds {
		if !now.Before(h.Until) {
			delete(g.holds, id)
		}
	}
	for id, until := range g.released {
		if !now.Before(until) {
			delete(g.released, id)
		}
	}
}

// Release lifts the hold r names before its end. The block on its target
// is recomputed from the holds still in force there (the latest end
// stands), so releasing one hold never lifts another on the same network
// or country; a block placed without a hold (Block, BlockCountry) is left
// as it is. The id is remembered until the hold's end, so the hold is not
// applied again if it is replayed. It reports whether a hold was lifted.
func (g *Gateway) Release(r Release) bool {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	g.pruneHolds()
	h, ok := g.holds[r.ID]
	end := r.Until
	if ok && h.Until.After(end) {
		end = h.Until
	}
	if end.After(g.now()) {
		g.released[r.ID] = end
	}
	if !ok {
		return false
	}
	delete(g.holds, r.ID)
	var rest *Hold
	for _, o := range g.holds {
		if o.Action == h.Action && o.Target == h.Target && (rest == nil || o.Until.After(rest.Until)) {
			o := o
			rest = &o
		}
	}
	if h.Action == HoldBlockCountry {
		g.blockMu.RLock()
		cur, held := g.countries[h.Target]
		g.blockMu.RUnlock()
		if !held || cur.Until.After(h.Until) {
			return true // placed by something else, later than this hold
		}
		if rest != nil {
			g.BlockCountry(h.Target, rest.Until, rest.Reason)
		} else {
			g.UnblockCountry(h.Target)
		}
		return true
	}
	p, _ := h.Prefix()
	g.blockMu.RLock()
	cur, held := g.blocks[p.Masked()]
	g.blockMu.RUnlock()
	if !held || cur.Until.After(h.Until) {
		return true
	}
	if rest != nil {
		g.Block(p, rest.Until, rest.Reason)
	} else {
		g.Unblock(p)
	}
	return true
}

// Release ends a hold before its end: an operator's decision, journaled at
// the authority as containment.release. On the containment stream it is
// the line {"release":{…}}.
type Release struct {
	ID       string    `json:"id"`
	Action   string    `json:"action"`
	Target   string    `json:"target"`
	Until    time.Time `json:"until"` // the end the hold had
	Reason   string    `json:"reason"`
	Actor    string    `json:"actor,omitempty"`
	Released time.Time `json:"released"`
}

// releaseLine is a release as a line of the containment stream.
type releaseLine struct {
	Release *Release `json:"release"`
}

// ParseRelease reads a release line ({"release":{…}}) strictly: unknown
// fields, trailing data, no id, an unknown action or a malformed target are
// refused, so that a gateway lifts nothing it does not understand.
func ParseRelease(b []byte) (Release, error) {
	var l releaseLine
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return Release{}, fmt.Errorf("%w: %v", ErrBadHold, err)
	}
	if dec.More() {
		return Release{}, fmt.Errorf("%w: trailing data", ErrBadHold)
	}
	if l.Release == nil {
		return Release{}, fmt.Errorf("%w: no release", ErrBadHold)
	}
	r := *l.Release
	if r.ID == "" || r.Until.IsZero() {
		return Release{}, fmt.Errorf("%w: release without id or end", ErrBadHold)
	}
	if err := (Hold{Action: r.Action, Target: r.Target}).check(); err != nil {
		return Release{}, err
	}
	return r, nil
}

// HoldEvent is one item of the containment stream after its snapshot: a
// new hold or a release.
type HoldEvent struct {
	Hold    *Hold
	Release *Release
}

func (e HoldEvent) line() any {
	if e.Release != nil {
		return releaseLine{Release: e.Release}
	}
	return e.Hold
}

// parseHoldLine reads one line of the containment stream: a release line
// when it names "release", a hold otherwise.
func parseHoldLine(b []byte) (HoldEvent, error) {
	var probe struct {
		Release json.RawMessage `json:"release"`
	}
	if json.Unmarshal(b, &probe) == nil && probe.Release != nil {
		r, err := ParseRelease(b)
		if err != nil {
			return HoldEvent{}, err
		}
		return HoldEvent{Release: &r}, nil
	}
	h, err := ParseHold(b)
	if err != nil {
		return HoldEvent{}, err
	}
	return HoldEvent{Hold: &h}, nil
}

// HoldStreamHandler serves the containment stream of holds only (no
// releases); see ContainmentStreamHandler.
func HoldStreamHandler(snapshot func(context.Context) ([]Hold, error), subscribe func(func(Hold)) (unsubscribe func())) http.Handler {
	return ContainmentStreamHandler(snapshot, func(fn func(HoldEvent)) func() {
		return subscribe(func(h Hold) { fn(HoldEvent{Hold: &h}) })
	})
}

// ContainmentStreamHandler serves the containment stream: every hold in
// force (snapshot), then each new hold and each release as it is made, one
// JSON line each (a hold as a Hold object, a release as {"release":{…}}),
// and an empty line every HoldHeartbeat. subscribe registers a callback
// for new events; a client that falls 256 events behind is disconnected
// and catches up from the snapshot when it reconnects.
func ContainmentStreamHandler(snapshot func(context.Context) ([]Hold, error), subscribe func(func(HoldEvent)) (unsubscribe func())) http.Handler {
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
		serveLines(w, r, rc, ch, lagged, HoldHeartbeat, HoldEvent.line)
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
	released  atomic.Uint64
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

// Released counts the releases received.
func (rh *RemoteHolds) Released() uint64 { return rh.released.Load() }

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
		e, err := parseHoldLine(line)
		if err != nil {
			return err // a corrupt stream is not trusted any further
		}
		if e.Release != nil {
			rh.g.Release(*e.Release)
			rh.released.Add(1)
			continue
		}
		if err := rh.g.Apply(*e.Hold); err != nil {
			return err
		}
		rh.applied.Add(1)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}
