// Package remote is the gateway's view of the issuance ledger when the gateway
// runs as its own process: a local index fed by an authority's stream, with
// failover between the authority replicas it is given.
package remote

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/custos-dev/custos/ledger"
)

const (
	// staleAfter: with no line heard for this long the index may be missing
	// revocations, so index hits are confirmed with the authority instead.
	staleAfter  = 3 * ledger.HeartbeatInterval
	maxLine     = 1 << 10
	maxBackoff  = 5 * time.Second
	minBackoff  = 100 * time.Millisecond
	sweepEvery  = time.Minute
	lookupLimit = 1 << 10
)

// Client keeps a local index of the authority's ledger. A hash the index
// holds is answered locally; a miss is asked of the authority once, so a token
// issued a moment ago is not refused; if the authority cannot be reached the
// answer is ledger.ErrUnavailable (fail closed).
type Client struct {
	bases []string
	cur   atomic.Int32 // the authority followed now (index into bases)
	hc    *http.Client
	now   func() time.Time
	ix    *ledger.Index

	lastHeard atomic.Int64 // unix nanoseconds of the last stream line
	synced    atomic.Bool  // the current connection delivered its snapshot

	// MaxStale is how long after the stream was last heard a token the
	// index knows as issued is still served when no authority answers
	// (0: never). Unseen tokens are refused at once either way.
	MaxStale time.Duration
	stale    atomic.Uint64 // answers served stale
}

// StaleServed counts the answers served from a stale index because no
// authority answered.
func (c *Client) StaleServed() uint64 { return c.stale.Load() }

// Staleness is how long ago the stream was last heard while the index is
// not fresh (0 while it is, and before it was ever heard).
func (c *Client) Staleness() time.Duration {
	now := c.now()
	if c.fresh(now) || c.lastHeard.Load() == 0 {
		return 0
	}
	return time.Duration(now.UnixNano() - c.lastHeard.Load())
}

// New returns a client of the authority at authorityURL (scheme://host[:port],
// optionally with a path prefix). client carries authentication (for example
// a transport adding a bearer token); nil means http.DefaultClient. Call Run
// to start following the stream.
func New(authorityURL string, client *http.Client, now func() time.Time) *Client {
	return NewFailover([]string{authorityURL}, client, now)
}

// NewFailover is New for several authority replicas: the stream is followed
// from one at a time, the next one taking over when it fails; a lookup that
// one cannot answer is asked of the others in turn. Every replica re-serves
// the others' records, so any one of them gives the whole ledger.
func NewFailover(authorityURLs []string, client *http.Client, now func() time.Time) *Client {
	if client == nil {
		client = http.DefaultClient
	}
	c := &Client{hc: client, now: now, ix: ledger.NewIndex(0)}
	for _, u := range authorityURLs {
		c.bases = append(c.bases, strings.TrimRight(u, "/"))
	}
	return c
}

// base is the authority followed now.
func (c *Client) base() string { return c.bases[int(c.cur.Load())%len(c.bases)] }

// next moves on to the following authority, and reports whether a whole
// round of them has been tried since start.
func (c *Client) next(start int32) bool {
	n := (c.cur.Load() + 1) % int32(len(c.bases))
	c.cur.Store(n)
	return n == start
}

// Synced reports whether the client follows a stream that has delivered its
// snapshot and been heard from recently (it is ready to answer from its index).
func (c *Client) Synced() bool { return c.fresh(c.now()) }

// Following is the authority whose stream the client follows now.
func (c *Client) Following() string { return c.base() }

// Index is the client's local index (for tests and metrics).
func (c *Client) Index() *ledger.Index { return c.ix }

// Run follows the issuance stream until ctx ends, reconnecting with
// exponential backoff, and sweeps expired entries from the local index. It
// returns ctx's error.
func (c *Client) Run(ctx context.Context) error {
	backoff := minBackoff
	lastSweep := c.now()
	round := c.cur.Load()
	for {
		start := time.Now()
		err := c.follow(ctx)
		c.synced.Store(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		_ = err // a broken stream is expected; the next authority or the backoff handles it
		if time.Since(start) > 10*time.Second {
			backoff = minBackoff
			round = c.cur.Load()
		}
		if !c.next(round) {
			continue // another replica may answer at once
		}
		if now := c.now(); now.Sub(lastSweep) > sweepEvery {
			c.ix.Sweep(now.Add(-ledger.ExpiryGrace))
			lastSweep = now
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// follow reads one stream connection to its end.
func (c *Client) follow(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base()+ledger.StreamPath, nil)
	if err != nil {
		return fmt.Errorf("failed to build stream request: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("failed to open ledger stream: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("failed to open ledger stream: status %d", resp.StatusCode)
	}
	// A connection that goes silent (no heartbeat) is cut so Run reconnects.
	watchdog := time.AfterFunc(staleAfter, cancel)
	defer watchdog.Stop()
	lastSweep := c.now()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, maxLine), maxLine)
	for sc.Scan() {
		watchdog.Reset(staleAfter)
		ln, err := ParseStreamLine(sc.Bytes())
		if err != nil {
			return err // a corrupt stream is not trusted any further
		}
		now := c.now()
		c.lastHeard.Store(now.UnixNano())
		switch {
		case ln.Heartbeat:
			c.synced.Store(true)
			if now.Sub(lastSweep) > sweepEvery {
				c.ix.Sweep(now.Add(-ledger.ExpiryGrace))
				lastSweep = now
			}
		case ln.Record.Revoked:
			c.ix.Revoke(ln.Record.Hash, ln.Record.Exp)
		default:
			c.ix.Add(ln.Record.Hash, ln.Record.Exp)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("failed to read ledger stream: %w", err)
	}
	return io.ErrUnexpectedEOF
}

// fresh reports whether the stream has been heard recently enough to trust
// the local index without asking.
func (c *Client) fresh(now time.Time) bool {
	return c.synced.Load() && now.UnixNano()-c.lastHeard.Load() < int64(staleAfter)
}

// Status answers whether h is live. A hit in a fresh local index answers at
// once; otherwise the authority is asked; if it cannot be reached the error
// is ledger.ErrUnavailable.
func (c *Client) Status(ctx context.Context, h ledger.Hash) (ledger.Status, error) {
	now := c.now()
	switch c.ix.Status(h, now.Add(-ledger.ExpiryGrace)) {
	case ledger.Revoked:
		return ledger.Revoked, nil // revocation is final; no need to ask
	case ledger.Live:
		if c.fresh(now) {
			return ledger.Live, nil
		}
		st, err := c.lookup(ctx, h)
		if err != nil && c.withinStale(now) {
			// The authority is out of reach: a token this gateway saw
			// issued is served for at most MaxStale after the stream
			// went quiet, then refused like any other.
			c.stale.Add(1)
			return ledger.Live, nil
		}
		return st, err
	}
	return c.lookup(ctx, h)
}

// withinStale reports whether the stream was heard within MaxStale.
func (c *Client) withinStale(now time.Time) bool {
	last := c.lastHeard.Load()
	return c.MaxStale > 0 && last != 0 && now.UnixNano()-last < int64(c.MaxStale)
}

// LocalStatus is Status when the local index can answer alone: a revoked
// hash, or a live one while the issuance stream is fresh.
func (c *Client) LocalStatus(h ledger.Hash) (ledger.Status, bool) {
	now := c.now()
	switch c.ix.Status(h, now.Add(-ledger.ExpiryGrace)) {
	case ledger.Revoked:
		return ledger.Revoked, true
	case ledger.Live:
		return ledger.Live, c.fresh(now)
	}
	return ledger.Unknown, false
}

// lookup asks the authority followed now, then each other one, until one
// answers; ledger.ErrUnavailable if none does.
func (c *Client) lookup(ctx context.Context, h ledger.Hash) (ledger.Status, error) {
	first := int(c.cur.Load())
	var errs []error
	for i := range c.bases {
		st, err := c.lookupAt(ctx, c.bases[(first+i)%len(c.bases)], h)
		if err == nil {
			return st, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return ledger.Unknown, errors.Join(errs...)
}

func (c *Client) lookupAt(ctx context.Context, base string, h ledger.Hash) (ledger.Status, error) {
	body := []byte(`{"hash":"` + h.String() + `"}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+ledger.LookupPath, bytes.NewReader(body))
	if err != nil {
		return ledger.Unknown, fmt.Errorf("%w: %v", ledger.ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return ledger.Unknown, fmt.Errorf("%w: %v", ledger.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, lookupLimit+1))
	if err != nil {
		return ledger.Unknown, fmt.Errorf("%w: %v", ledger.ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		return ledger.Unknown, fmt.Errorf("%w: lookup status %d", ledger.ErrUnavailable, resp.StatusCode)
	}
	st, exp, err := ParseLookupResponse(raw)
	if err != nil {
		return ledger.Unknown, fmt.Errorf("%w: %v", ledger.ErrUnavailable, err)
	}
	switch st {
	case ledger.Live:
		c.ix.Add(h, exp)
	case ledger.Revoked:
		c.ix.Revoke(h, exp)
	}
	return st, nil
}

// ErrBadLine marks a stream line or lookup answer that does not parse.
var ErrBadLine = errors.New("remote: malformed ledger message")

// Line is one parsed stream line: a heartbeat or a record.
type Line struct {
	Heartbeat bool
	Record    ledger.Record
}

// ParseStreamLine parses one line of the issuance stream (without its newline).
func ParseStreamLine(b []byte) (Line, error) {
	if len(b) > maxLine {
		return Line{}, fmt.Errorf("%w: line too long", ErrBadLine)
	}
	var m struct {
		H   *string `json:"h"`
		Exp *int64  `json:"exp"`
		R   bool    `json:"r"`
		HB  *int64  `json:"hb"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Line{}, fmt.Errorf("%w: not a stream object", ErrBadLine)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Line{}, fmt.Errorf("%w: trailing data", ErrBadLine)
	}
	switch {
	case m.HB != nil && m.H == nil && m.Exp == nil && !m.R:
		return Line{Heartbeat: true}, nil
	case m.HB == nil && m.H != nil && m.Exp != nil:
		h, err := ledger.ParseHash(*m.H)
		if err != nil {
			return Line{}, fmt.Errorf("%w: %v", ErrBadLine, err)
		}
		if *m.Exp <= 0 {
			return Line{}, fmt.Errorf("%w: exp must be positive", ErrBadLine)
		}
		return Line{Record: ledger.Record{Hash: h, Exp: time.Unix(*m.Exp, 0), Revoked: m.R}}, nil
	}
	return Line{}, fmt.Errorf("%w: neither record nor heartbeat", ErrBadLine)
}

// ParseLookupResponse parses the authority's lookup answer.
func ParseLookupResponse(b []byte) (ledger.Status, time.Time, error) {
	if len(b) > lookupLimit {
		return ledger.Unknown, time.Time{}, fmt.Errorf("%w: answer too long", ErrBadLine)
	}
	var m struct {
		Status string `json:"status"`
		Exp    int64  `json:"exp"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return ledger.Unknown, time.Time{}, fmt.Errorf("%w: not a lookup answer", ErrBadLine)
	}
	switch m.Status {
	case "unknown":
		return ledger.Unknown, time.Time{}, nil
	case "live", "revoked":
		if m.Exp <= 0 {
			return ledger.Unknown, time.Time{}, fmt.Errorf("%w: exp must be positive", ErrBadLine)
		}
		st := ledger.Live
		if m.Status == "revoked" {
			st = ledger.Revoked
		}
		return st, time.Unix(m.Exp, 0), nil
	}
	return ledger.Unknown, time.Time{}, fmt.Errorf("%w: unknown status", ErrBadLine)
}
