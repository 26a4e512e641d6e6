package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/token"
)

// Paths on the authority that RemoteKeys reads.
const (
	JWKSPath       = "/.well-known/jwks.json"
	RevokedPath    = "/v1/keys/revoked"
	KeyStreamPath  = "/v1/keys/stream"
	DefaultRefresh = 2 * time.Second
	maxStreamLine  = 4 << 10
	maxRevokedBody = 1 << 20
)

// KeyChange is one line of the key stream.
type KeyChange struct {
	KID   string     `json:"kid"`
	State keys.State `json:"state"`
}

// RemoteKeys is a KeySet kept in step with an authority over HTTP, for a
// gateway running as its own process: the JWKS and the list of revoked kids
// are fetched every interval as a backstop, and key changes are pushed over
// the authority's key stream as they happen. A revoked kid stays revoked for
// the life of the process. Until the first fetch succeeds every kid is unknown.
type RemoteKeys struct {
	bases    []*url.URL
	cur      atomic.Int32 // the authority asked first now
	client   *http.Client
	interval time.Duration

	mu       sync.RWMutex
	keys     map[string]keys.Key
	states   map[string]keys.State // pushed or listed revoked/retired kids
	lastSync time.Time

	// MissInterval and MissBurst bound the fetches that kids this set does
	// not know set off (FetchKID): one per MissInterval on average, at most
	// MissBurst in a row; zero means DefaultMissInterval, DefaultMissBurst.
	// Set them before use.
	MissInterval time.Duration
	MissBurst    int
	miss         chan struct{} // held by the FetchKID asking the authorities
	missLimit    *rate.Limiter // made at the first FetchKID (under miss)
	missFetches  atomic.Uint64
}

var _ KeySet = (*RemoteKeys)(nil)

// NewRemoteKeys reads keys from the authority at base (e.g.
// "http://127.0.0.1:7700"). interval 0 means DefaultRefresh; client nil
// means a client with a 10 s timeout for fetches (the stream has none).
func NewRemoteKeys(base string, interval time.Duration, client *http.Client) (*RemoteKeys, error) {
	return NewRemoteKeysFailover([]string{base}, interval, client)
}

// NewRemoteKeysFailover is NewRemoteKeys for several authority replicas: a
// fetch that one cannot answer is asked of the next, and the key stream is
// followed from one at a time, the next taking over when it fails.
func NewRemoteKeysFailover(bases []string, interval time.Duration, client *http.Client) (*RemoteKeys, error) {
	if len(bases) == 0 {
		return nil, fmt.Errorf("%w: no authority URL", ErrConfig)
	}
	var us []*url.URL
	for _, base := range bases {
		u, err := url.Parse(strings.TrimRight(base, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: authority URL %q", ErrConfig, base)
		}
		us = append(us, u)
	}
	if interval <= 0 {
		interval = DefaultRefresh
	}
	if client == nil {
		client = &http.Client{}
	}
	return &RemoteKeys{bases: us, client: client, interval: interval,
		keys: map[string]keys.Key{}, states: map[string]keys.State{}, miss: make(chan struct{}, 1)}, nil
}

// DefaultMissInterval and DefaultMissBurst bound how often tokens under
// kids no authority has made (forgeries) can make a gateway ask for the key
// set: one fetch per interval on average, a few in a row (several keys
// rotated within a second), whatever the rate of such tokens.
const (
	DefaultMissInterval = 250 * time.Millisecond
	DefaultMissBurst    = 4
)

// missTimeout bounds the fetch a token under an unknown kid waits for.
const missTimeout = 2 * time.Second

// FetchKID asks the authorities for kid, which this set does not know, and
// returns its key if one of them lists it. A key made moments ago (a
// rotation at any replica) reaches the gateway by push and by the periodic
// fetch, but a token signed by it can arrive first: rather than refuse it
// as unknown_key, the gateway asks each authority in turn, the one asked
// first now, then the others (a replica that has not yet loaded the key
// from the shared store does not list it). Concurrent callers share one
// fetch, and fetches are rate-limited (MissInterval, MissBurst): past the
// burst a caller waits for its turn if it comes within missTimeout. A caller
// whose turn is further off, or whose fetch fails, gets false: the token is
// refused.
func (rk *RemoteKeys) FetchKID(ctx context.Context, kid string) (keys.Key, bool) {
	if kid == "" {
		return keys.Key{}, false
	}
	select {
	case rk.miss <- struct{}{}:
	case <-ctx.Done():
		return keys.Key{}, false
	}
	defer func() { <-rk.miss }()
	if k, ok := rk.Lookup(kid); ok { // the fetch this caller waited for found it
		return k, true
	}
	if rk.missLimit == nil {
		every, burst := rk.MissInterval, rk.MissBurst
		if every <= 0 {
			every = DefaultMissInterval
		}
		if burst <= 0 {
			burst = DefaultMissBurst
		}
		rk.missLimit = rate.NewLimiter(rate.Every(every), burst)
	}
	// Past the burst, a fetch waits for its turn within missTimeout rather
	// than refuse a token of a key made a moment ago; a turn further off
	// than that is refused at once.
	ctx, cancel := context.WithTimeout(ctx, missTimeout)
	defer cancel()
	if rk.missLimit.Wait(ctx) != nil {
		return keys.Key{}, false
	}
	rk.missFetches.Add(1)
	first := int(rk.cur.Load())
	for i := range rk.bases {
		if ctx.Err() != nil {
			break
		}
		if rk.fetchFrom(ctx, rk.bases[(first+i)%len(rk.bases)], kid) {
			break
		}
	}
	return rk.Lookup(kid)
}

// MissFetches counts the fetches that unknown kids set off (FetchKID).
func (rk *RemoteKeys) MissFetches() uint64 { return rk.missFetches.Load() }

// fetchFrom reads one authority's JWKS and revoked list and, if the JWKS
// lists kid, adds its keys and revocations to the set (adds only: a
// replica that lags must not take away a key another one listed). It
// reports whether kid was listed.
func (rk *RemoteKeys) fetchFrom(ctx context.Context, base *url.URL, kid string) bool {
	body, err := rk.getAt(ctx, base, JWKSPath, token.MaxJWKSSize)
	if err != nil {
		return false
	}
	set, err := token.ParseJWKS(body)
	if err != nil || !slices.ContainsFunc(set, func(k keys.Key) bool { return k.KID == kid }) {
		return false
	}
	body, err = rk.getAt(ctx, base, RevokedPath, maxRevokedBody)
	if err != nil {
		return false
	}
	revoked, err := parseRevoked(body)
	if err != nil {
		return false
	}
	rk.mu.Lock()
	for _, k := range set {
		rk.keys[k.KID] = k
	}
	for _, r := range revoked {
		rk.states[r] = keys.Revoked
	}
	rk.mu.Unlock()
	return true
}

// Lookup implements KeySet.
func (rk *RemoteKeys) Lookup(kid string) (keys.Key, bool) {
	rk.mu.RLock()
	defer rk.mu.RUnlock()
	k, ok := rk.keys[kid]
	if st, bad := rk.states[kid]; bad {
		k.KID, k.State = kid, st
		return k, true
	}
	return k, ok
}

// LastSync is when the JWKS and revoked list were last fetched successfully.
func (rk *RemoteKeys) LastSync() time.Time {
	rk.mu.RLock()
	defer rk.mu.RUnlock()
	return rk.lastSync
}

// Refresh fetches the JWKS and the revoked list once. On any error the
// previous view is kept.
func (rk *RemoteKeys) Refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	body, err := rk.get(ctx, JWKSPath, token.MaxJWKSSize)
	if err != nil {
		return err
	}
	set, err := token.ParseJWKS(body)
	if err != nil {
		return fmt.Errorf("failed to read JWKS: %w", err)
	}
	body, err = rk.get(ctx, RevokedPath, maxRevokedBody)
	if err != nil {
		return err
	}
	revoked, err := parseRevoked(body)
	if err != nil {
		return fmt.Errorf("failed to read revoked keys: %w", err)
	}
	m := make(map[string]keys.Key, len(set))
	for _, k := range set {
		m[k.KID] = k
	}
	rk.mu.Lock()
	rk.keys = m
	for _, kid := range revoked {
		rk.states[kid] = keys.Revoked
	}
	rk.lastSync = time.Now()
	rk.mu.Unlock()
	return nil
}

// parseRevoked accepts a JSON list of kids, or of objects with a kid.
func parseRevoked(b []byte) ([]string, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(b, &items); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		var s string
		if err := json.Unmarshal(it, &s); err == nil {
			out = append(out, s)
			continue
		}
		var o struct {
			KID string `json:"kid"`
		}
		if err := json.Unmarshal(it, &o); err != nil || o.KID == "" {
			return nil, errors.New("entry is neither a kid nor an object with one")
		}
		out = append(out, o.KID)
	}
	return out, nil
}

// base is the authority asked first now.
func (rk *RemoteKeys) base() *url.URL { return rk.bases[int(rk.cur.Load())%len(rk.bases)] }

// get fetches p from the authority asked first now, then from each other
// one; the first to answer is asked first from then on.
func (rk *RemoteKeys) get(ctx context.Context, p string, limit int64) ([]byte, error) {
	first := int(rk.cur.Load())
	var errs []error
	for i := range rk.bases {
		n := (first + i) % len(rk.bases)
		b, err := rk.getAt(ctx, rk.bases[n], p, limit)
		if err == nil {
			rk.cur.Store(int32(n))
			return b, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func (rk *RemoteKeys) getAt(ctx context.Context, base *url.URL, p string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base.String()+p, nil)
	if err != nil {
		return nil, err
	}
	resp, err := rk.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("failed to fetch %s: %w", p, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("failed to fetch %s: status %d", p, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", p, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("failed to read %s: larger than %d bytes", p, limit)
	}
	return b, nil
}

// apply records one pushed change. It reports whether the key set should be
// fetched again (a key this gateway has not seen became usable).
func (rk *RemoteKeys) apply(c KeyChange) bool {
	rk.mu.Lock()
	defer rk.mu.Unlock()
	switch c.State {
	case keys.Revoked, keys.Retired:
		if rk.states[c.KID] != keys.Revoked {
			rk.states[c.KID] = c.State
		}
		return false
	case keys.Active, keys.VerifyOnly:
		_, known := rk.keys[c.KID]
		return !known
	}
	return false
}

// Run keeps the view fresh until ctx ends: a first fetch, a fetch every
// interval, and the push stream, reconnected after errors. errf, when not
// nil, hears about failures (they never stop Run).
func (rk *RemoteKeys) Run(ctx context.Context, errf func(error)) {
	if errf == nil {
		errf = func(error) {}
	}
	refresh := make(chan struct{}, 1)
	poke := func() {
		select {
		case refresh <- struct{}{}:
		default:
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		backoff := 100 * time.Millisecond
		for ctx.Err() == nil {
			start := time.Now()
			err := rk.stream(ctx, poke)
			if ctx.Err() != nil {
				return
			}
			errf(fmt.Errorf("key stream: %w", err))
			if len(rk.bases) > 1 {
				rk.cur.Store((rk.cur.Load() + 1) % int32(len(rk.bases)))
			}
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
	}()
	t := time.NewTicker(rk.interval)
	defer t.Stop()
	if err := rk.Refresh(ctx); err != nil {
		errf(err)
	}
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
		case <-refresh:
		}
		if err := rk.Refresh(ctx); err != nil && ctx.Err() == nil {
			errf(err)
		}
	}
}

// stream follows the key stream until it ends. Once connected it asks for a
// full fetch, so nothing missed while disconnected is lost.
func (rk *RemoteKeys) stream(ctx context.Context, refresh func()) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rk.base().String()+KeyStreamPath, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	c := *rk.client
	c.Timeout = 0 // a stream lasts as long as it lasts
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	refresh()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 512), maxStreamLine)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue // heartbeat
		}
		var ch KeyChange
		if err := json.Unmarshal([]byte(line), &ch); err != nil || ch.KID == "" {
			return fmt.Errorf("bad stream line: %q", line)
		}
		if rk.apply(ch) {
			refresh()
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.EOF
}

// KeyStreamHandler serves the key stream: one JSON line {"kid","state"} per
// key change, and an empty line every 15 s so idle connections stay open.
// subscribe registers a callback for key changes and returns the function
// that removes it; the callback must not block, and does not: a client that
// falls 64 changes behind is disconnected and refetches when it reconnects.
func KeyStreamHandler(subscribe func(func(keys.Key)) (unsubscribe func())) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch, lagged, unsub := subscribeLagging(subscribe, 64)
		defer unsub()
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		if err := rc.Flush(); err != nil {
			return
		}
		serveLines(w, r, rc, ch, lagged, 15*time.Second, func(k keys.Key) any { return KeyChange{KID: k.KID, State: k.State} })
	})
}

// subscribeLagging subscribes a channel of n values; a subscriber that
// falls n behind gets lagged closed (the callback never blocks).
func subscribeLagging[T any](subscribe func(func(T)) (unsubscribe func()), n int) (<-chan T, <-chan struct{}, func()) {
	ch := make(chan T, n)
	lagged := make(chan struct{})
	var once sync.Once
	unsub := subscribe(func(v T) {
		select {
		case ch <- v:
		default:
			once.Do(func() { close(lagged) })
		}
	})
	return ch, lagged, unsub
}

// serveLines writes each value of ch as a JSON line (as conv makes it),
// and an empty line every beat, flushing after each, until the client
// goes or lagged is closed.
func serveLines[T any](w io.Writer, r *http.Request, rc *http.ResponseController, ch <-chan T, lagged <-chan struct{}, beat time.Duration, conv func(T) any) {
	t := time.NewTicker(beat)
	defer t.Stop()
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-lagged:
			return
		case <-t.C:
			if _, err := io.WriteString(w, "\n"); err != nil {
				return
			}
		case v := <-ch:
			if err := enc.Encode(conv(v)); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// Apply takes a key change heard elsewhere (the bus of a scale-out
// deployment): a revocation takes effect at once; a new usable key makes the
// next Refresh fetch the key set.
func (rk *RemoteKeys) Apply(ctx context.Context, k keys.Key) {
	if rk.apply(KeyChange{KID: k.KID, State: k.State}) {
		rk.Refresh(ctx)
	}
}
