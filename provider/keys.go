package provider

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Refresh policy of a provider's key set.
const (
	// keysMaxAge: the key set is fetched again after this long.
	keysMaxAge = 5 * time.Minute
	// keysMinRefresh: an unknown kid fetches again at most this often, so
	// tokens with made-up kids cannot make custos hammer the provider.
	keysMinRefresh = 10 * time.Second
	// keysStale: when fetching fails, a key set up to this old still
	// serves; older, every token of the provider is refused.
	keysStale    = time.Hour
	maxJWKSBytes = 256 << 10
	maxJWKSKeys  = 64
	minRSABits   = 2048
)

// remoteKeys is a provider's published key set, fetched and cached.
type remoteKeys struct {
	url    string
	client *http.Client
	now    func() time.Time

	mu      sync.Mutex
	set     *jose.JSONWebKeySet
	fetched time.Time
	tried   time.Time
}

// keySet returns the cached set, fetching it when it is missing, old, or
// (refresh) lacks the key a token names.
func (r *remoteKeys) keySet(ctx context.Context, refresh bool) (*jose.JSONWebKeySet, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	want := refresh || r.set == nil || now.Sub(r.fetched) >= keysMaxAge
	if want && (r.tried.IsZero() || now.Sub(r.tried) >= keysMinRefresh) {
		r.tried = now
		set, err := r.fetch(ctx)
		if err == nil {
			r.set, r.fetched = set, now
		} else if r.set == nil || now.Sub(r.fetched) >= keysStale {
			return nil, err
		}
	}
	if r.set == nil {
		return nil, fmt.Errorf("key set %s not fetched yet", r.url)
	}
	if now.Sub(r.fetched) >= keysStale {
		return nil, fmt.Errorf("key set %s could not be fetched for %s", r.url, keysStale)
	}
	return r.set, nil
}

func (r *remoteKeys) fetch(ctx context.Context) (*jose.JSONWebKeySet, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("failed to fetch key set %s: %w", r.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("failed to fetch key set %s: status %d", r.url, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("failed to fetch key set %s: %w", r.url, err)
	}
	set, err := parseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("key set %s: %w", r.url, err)
	}
	return set, nil
}

// parseKeys reads a published key set. Keys for encryption and keys of
// types custos does not verify are left out (providers publish both);
// a private key refuses the whole set.
func parseKeys(b []byte) (*jose.JSONWebKeySet, error) {
	if len(b) > maxJWKSBytes {
		return nil, fmt.Errorf("key set larger than %d bytes", maxJWKSBytes)
	}
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("bad key set: %v", err)
	}
	if len(raw.Keys) == 0 || len(raw.Keys) > maxJWKSKeys {
		return nil, fmt.Errorf("key set of %d keys (1 to %d)", len(raw.Keys), maxJWKSKeys)
	}
	out := &jose.JSONWebKeySet{}
	for i, kb := range raw.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(kb); err != nil {
			continue // a key type go-jose does not read (Keycloak publishes RSA-OAEP and others)
		}
		if !k.IsPublic() {
			return nil, fmt.Errorf("key %d is not a public key", i)
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		switch pk := k.Key.(type) {
		case ed25519.PublicKey:
		case *ecdsa.PublicKey:
			if pk.Curve != elliptic.P256() {
				continue
			}
		case *rsa.PublicKey:
			if pk.N.BitLen() < minRSABits {
				continue
			}
		default:
			continue
		}
		out.Keys = append(out.Keys, k)
	}
	if len(out.Keys) == 0 {
		return nil, fmt.Errorf("key set holds no signature key custos verifies (Ed25519, P-256, RSA of %d bits or more)", minRSABits)
	}
	return out, nil
}
