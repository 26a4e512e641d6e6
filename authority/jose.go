package authority

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/custos-dev/custos/jwks"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Signed JWTs from outside custos (client assertions, identity providers'
// ID tokens) are read with go-jose: they come in every shape the field
// issues, unlike custos's own tokens, which package token reads strictly.

// assertionAlgs are the JWS algorithms accepted from clients and identity
// providers. HS* (a shared secret would have to be stored in clear) and
// "none" are never accepted.
var assertionAlgs = []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256, jose.RS256}

// AssertionAlgs lists the algorithms accepted on client assertions and
// subject tokens (the metadata's token_endpoint_auth_signing_alg_values_supported).
func AssertionAlgs() []string {
	out := make([]string, len(assertionAlgs))
	for i, a := range assertionAlgs {
		out[i] = string(a)
	}
	return out
}

// Bounds on outside JOSE input.
const (
	maxJWTBytes  = 16 << 10
	maxJWKSBytes = 256 << 10
	maxJWKSKeys  = 64
	minRSABits   = 2048
)

// errNoKey: the key set has no key the JWT's header names.
var errNoKey = errors.New("no key in the key set matches the JWT")

// parseClientKeys reads a public key set and refuses private keys, keys for
// encryption, and keys of types custos does not verify.
func parseClientKeys(b []byte) (*jose.JSONWebKeySet, error) {
	if len(b) > maxJWKSBytes {
		return nil, fmt.Errorf("key set larger than %d bytes", maxJWKSBytes)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("bad key set: %v", err)
	}
	if len(set.Keys) == 0 || len(set.Keys) > maxJWKSKeys {
		return nil, fmt.Errorf("key set of %d keys (1 to %d)", len(set.Keys), maxJWKSKeys)
	}
	for i, k := range set.Keys {
		if !k.IsPublic() {
			return nil, fmt.Errorf("key %d is not a public key", i)
		}
		if k.Use != "" && k.Use != "sig" {
			return nil, fmt.Errorf("key %d is for %q, not signatures", i, k.Use)
		}
		switch pk := k.Key.(type) {
		case ed25519.PublicKey:
		case *ecdsa.PublicKey:
			if pk.Curve != elliptic.P256() {
				return nil, fmt.Errorf("key %d: only P-256 EC keys", i)
			}
		case *rsa.PublicKey:
			if pk.N.BitLen() < minRSABits {
				return nil, fmt.Errorf("key %d: RSA key of %d bits, fewer than %d", i, pk.N.BitLen(), minRSABits)
			}
		default:
			return nil, fmt.Errorf("key %d: type %T not accepted", i, k.Key)
		}
	}
	return &set, nil
}

// keySource gives the key set to verify a JWT with. refresh asks for a
// fresh copy when the cached one lacks the JWT's key.
type keySource interface {
	KeySet(ctx context.Context, refresh bool) (*jose.JSONWebKeySet, error)
}

// staticKeys is a key set registered with the client.
type staticKeys struct{ set *jose.JSONWebKeySet }

func (s staticKeys) KeySet(context.Context, bool) (*jose.JSONWebKeySet, error) { return s.set, nil }

// keyCache holds one fetched key set per URL.
type keyCache struct {
	client *http.Client
	now    func() time.Time

	mu   sync.Mutex
	sets map[string]*jwks.Remote
}

func (c *keyCache) get(u string) *jwks.Remote {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sets == nil {
		c.sets = map[string]*jwks.Remote{}
	}
	r, ok := c.sets[u]
	if !ok {
		if len(c.sets) >= 1<<12 {
			clear(c.sets)
		}
		r = &jwks.Remote{URL: u, Client: c.client, Now: c.now, Parse: parseClientKeys}
		c.sets[u] = r
	}
	return r
}

// verifyJWT parses raw as a compact JWS JWT signed with one of algs and
// verifies it with the key of src its header names (by kid; without a kid,
// the set must hold exactly one key). Claims are decoded into dest.
func verifyJWT(ctx context.Context, raw string, algs []jose.SignatureAlgorithm, src keySource, dest ...any) (*jwt.JSONWebToken, error) {
	if len(raw) > maxJWTBytes {
		return nil, fmt.Errorf("JWT larger than %d bytes", maxJWTBytes)
	}
	tok, err := jwt.ParseSigned(raw, algs)
	if err != nil {
		return nil, fmt.Errorf("bad JWT: %v", err)
	}
	if len(tok.Headers) != 1 {
		return nil, errors.New("bad JWT: not one signature")
	}
	h := tok.Headers[0]
	if h.JSONWebKey != nil || h.ExtraHeaders["jku"] != nil || h.ExtraHeaders["x5u"] != nil {
		// Keys named by the JWT itself are never used; refusing them
		// outright keeps a confused reader from trying.
		return nil, errors.New("bad JWT: header carries its own key")
	}
	for _, refresh := range []bool{false, true} {
		set, err := src.KeySet(ctx, refresh)
		if err != nil {
			return nil, err
		}
		var keys []jose.JSONWebKey
		switch {
		case h.KeyID != "":
			keys = set.Key(h.KeyID)
		case len(set.Keys) == 1:
			keys = set.Keys
		}
		if len(keys) == 0 {
			continue
		}
		for _, k := range keys {
			if k.Algorithm != "" && k.Algorithm != h.Algorithm {
				continue
			}
			if err := tok.Claims(k.Key, dest...); err == nil {
				return tok, nil
			}
		}
		return nil, errors.New("bad JWT: signature does not verify")
	}
	return nil, errNoKey
}
