// Package jwks fetches a JSON Web Key Set published at a URL (an identity
// provider's, a client's jwks_uri) and caches it, fetching again on age or
// on a key id the cached copy lacks, at a bounded rate.
//
// go-jose, which custos uses for these keys, parses key sets but does not
// fetch or cache them; the few lines here keep custos on that one JOSE
// library rather than add a second one for its cache.
package jwks

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Refresh policy of a fetched key set.
const (
	// MaxAge: a fetched key set is fetched again after this long.
	MaxAge = 5 * time.Minute
	// MinRefresh: an unknown kid fetches again at most this often, so
	// tokens with made-up kids cannot make custos hammer the publisher.
	MinRefresh = 10 * time.Second
	// Stale: when fetching fails, a key set up to this old still serves;
	// older, every token it would verify is refused.
	Stale = time.Hour
	// MaxBytes bounds a key set's body.
	MaxBytes = 256 << 10
)

// Remote is one published key set, fetched and cached. Parse reads the
// fetched body (each user decides which keys it keeps); Now defaults to
// time.Now and Client to http.DefaultClient.
type Remote struct {
	URL    string
	Client *http.Client
	Now    func() time.Time
	Parse  func([]byte) (*jose.JSONWebKeySet, error)

	mu      sync.Mutex
	set     *jose.JSONWebKeySet
	fetched time.Time // when set was fetched
	tried   time.Time // last fetch attempt
}

// KeySet returns the cached set, fetching it when it is missing, old, or
// (refresh) lacks the key a token names.
func (r *Remote) KeySet(ctx context.Context, refresh bool) (*jose.JSONWebKeySet, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.Now != nil {
		now = r.Now()
	}
	want := refresh || r.set == nil || now.Sub(r.fetched) >= MaxAge
	if want && (r.tried.IsZero() || now.Sub(r.tried) >= MinRefresh) {
		r.tried = now
		set, err := r.fetch(ctx)
		if err == nil {
			r.set, r.fetched = set, now
		} else if r.set == nil || now.Sub(r.fetched) >= Stale {
			return nil, err
		}
	}
	if r.set == nil {
		return nil, fmt.Errorf("key set %s not fetched yet", r.URL)
	}
	if now.Sub(r.fetched) >= Stale {
		return nil, fmt.Errorf("key set %s could not be fetched for %s", r.URL, Stale)
	}
	return r.set, nil
}

func (r *Remote) fetch(ctx context.Context) (*jose.JSONWebKeySet, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	client := r.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("failed to fetch key set %s: %w", r.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("failed to fetch key set %s: status %d", r.URL, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("failed to fetch key set %s: %w", r.URL, err)
	}
	if len(b) > MaxBytes {
		return nil, fmt.Errorf("key set %s larger than %d bytes", r.URL, MaxBytes)
	}
	set, err := r.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("key set %s: %w", r.URL, err)
	}
	return set, nil
}

// CheckURL accepts https URLs, and http ones on a loopback address.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("%q is not an absolute URL without credentials", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); h == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
	}
	return fmt.Errorf("%q must be https (http only on a loopback address)", raw)
}
