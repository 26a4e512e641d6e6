package provider_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/jwks"
	"github.com/custos-dev/custos/provider"
	"github.com/custos-dev/custos/verdict"
)

// countSigs makes the fixture's checker count the signatures it verifies.
func countSigs(f *fixture) *atomic.Uint64 {
	n := new(atomic.Uint64)
	f.checker.Signatures = n
	return n
}

// A provider's token seen again is served from the cache: one signature
// for the first request, none for the next ones, under every algorithm.
func TestWarmVerifiesNoSignature(t *testing.T) {
	f := newFixture(t, provider.Webhook)
	sigs := countSigs(f)
	for i, kid := range []string{"ed", "ec", "rs"} {
		c := f.claims(map[string]any{"jti": "jti-warm-" + kid})
		f.record(t, rec("jti-warm-"+kid, c["exp"].(int64)))
		raw := f.idp.sign(t, kid, c)
		if r := f.check(raw); !r.Good() || r.Cached {
			t.Fatalf("%s first request: %+v", kid, r)
		}
		if n := sigs.Load(); n != uint64(i+1) {
			t.Fatalf("%s first request: %d signatures in all, want %d", kid, n, i+1)
		}
		for range 5 {
			if r := f.check(raw); !r.Good() || !r.Cached || !r.Verified || r.Claims.Subject != "member-1001" || r.Claims.Audience != "shop-api" {
				t.Fatalf("%s warm request: %+v", kid, r)
			}
		}
		if n := sigs.Load(); n != uint64(i+1) {
			t.Fatalf("%s warm requests verified signatures: %d in all, want %d", kid, n, i+1)
		}
	}
}

// A token never recorded is not kept: each request verifies it again and
// refuses it, until its record arrives (a Keycloak event comes after the
// token), from then on it is served and cached.
func TestUnrecordedNotCached(t *testing.T) {
	f := newFixture(t, provider.Webhook)
	sigs := countSigs(f)
	c := f.claims(map[string]any{"jti": "jti-late-0001"})
	raw := f.idp.sign(t, "ed", c)
	for i := range 3 {
		if r := f.check(raw); r.Reason != event.ReasonNotIssued || r.Cached {
			t.Fatalf("unrecorded, request %d: %+v", i, r)
		}
	}
	if n := sigs.Load(); n != 3 {
		t.Fatalf("%d signatures for 3 requests of an unrecorded token, want 3", n)
	}
	f.record(t, rec("jti-late-0001", c["exp"].(int64)))
	if r := f.check(raw); !r.Good() || r.Cached {
		t.Fatalf("once recorded: %+v", r)
	}
	if r := f.check(raw); !r.Good() || !r.Cached {
		t.Fatalf("once recorded, again: %+v", r)
	}
}

// A key the provider takes out of its set stops verifying as soon as the
// gateway holds the new set, for tokens already in the cache too; tokens
// under the keys that stay are still served warm.
func TestCachedKeyLeavesSet(t *testing.T) {
	f := newFixture(t, provider.Webhook)
	c := f.claims(nil)
	f.record(t, rec("jti-0123456789", c["exp"].(int64)))
	ed, ec := f.idp.sign(t, "ed", c), f.idp.sign(t, "ec", c)
	for _, raw := range []string{ed, ec, ed, ec} {
		if r := f.check(raw); !r.Good() {
			t.Fatalf("before the key left: %+v", r)
		}
	}
	f.idp.drop("ed")
	// The set is fetched again once it is jwks.MaxAge old.
	f.ahead.Store(int64(jwks.MaxAge))
	if r := f.check(ed); r.Reason != event.ReasonUnknownKey {
		t.Fatalf("cached token whose key left the set: %+v, want unknown_key", r)
	}
	if n := f.idp.fetches.Load(); n < 2 {
		t.Fatalf("the key set was not fetched again (%d fetches)", n)
	}
	if r := f.check(ed); r.Reason != event.ReasonUnknownKey {
		t.Fatalf("again: %+v, want unknown_key", r)
	}
	if r := f.check(ec); !r.Good() || !r.Cached {
		t.Fatalf("token of a key still published: %+v", r)
	}
}

// A provider that publishes another key under the kid a cached token
// verified under no longer vouches for that token.
func TestCachedKeyReplacedUnderSameKID(t *testing.T) {
	f := newFixture(t, provider.Webhook)
	c := f.claims(nil)
	f.record(t, rec("jti-0123456789", c["exp"].(int64)))
	raw := f.idp.sign(t, "ed", c)
	for range 2 {
		if r := f.check(raw); !r.Good() {
			t.Fatalf("before: %+v", r)
		}
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	f.idp.mu.Lock()
	f.idp.keys["ed"] = other
	f.idp.mu.Unlock()
	f.ahead.Store(int64(jwks.MaxAge))
	if r := f.check(raw); r.Reason != event.ReasonBadSignature {
		t.Fatalf("cached token whose kid now names another key: %+v, want bad_signature", r)
	}
}

// A cached token whose record is revoked in the ledger is refused on the
// next request, from the cache.
func TestCachedRevokedRefused(t *testing.T) {
	f := newFixture(t, provider.Webhook)
	c := f.claims(nil)
	f.record(t, rec("jti-0123456789", c["exp"].(int64)))
	raw := f.idp.sign(t, "ed", c)
	for range 2 {
		if r := f.check(raw); !r.Good() {
			t.Fatalf("before: %+v", r)
		}
	}
	bk := provider.BindingKey(iss, "jti", "jti-0123456789", "member-1001", "shop-web", provider.Audience{"account", "shop-api"})
	if err := f.led.Revoke(context.Background(), bk); err != nil {
		t.Fatal(err)
	}
	if r := f.check(raw); r.Reason != event.ReasonRevokedToken || !r.Cached {
		t.Fatalf("cached token revoked in the ledger: %+v, want revoked_token from the cache", r)
	}
}

// A forgery signed by another key under the same kid, with the same
// claims, is never served from the cache of the real token: it is read
// cold and its signature fails.
func TestForgedNotServedFromCache(t *testing.T) {
	f := newFixture(t, provider.Webhook)
	sigs := countSigs(f)
	c := f.claims(nil)
	f.record(t, rec("jti-0123456789", c["exp"].(int64)))
	raw := f.idp.sign(t, "ed", c)
	for range 2 {
		if r := f.check(raw); !r.Good() {
			t.Fatalf("real token: %+v", r)
		}
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	forged := signWith(t, other, jose.EdDSA, "ed", c)
	before := sigs.Load()
	for range 2 {
		if r := f.check(forged); r.Reason != event.ReasonBadSignature || r.Cached || r.Verified {
			t.Fatalf("forgery: %+v, want bad_signature, not from the cache", r)
		}
	}
	if n := sigs.Load() - before; n != 2 {
		t.Fatalf("%d signatures for two forgeries, want 2", n)
	}
	if r := f.check(raw); !r.Good() || !r.Cached {
		t.Fatalf("real token after the forgeries: %+v", r)
	}
}

// A token whose exp passes while it is cached is refused as expired, with
// the provider's clock skew (not the gateway's leeway) as the allowance.
func TestCachedExpiry(t *testing.T) {
	f := newFixture(t, provider.Webhook)
	// Another set with a two-minute skew; the policy keeps 30 s.
	cfg := *f.cfg
	cfg.ClockSkew = 2 * time.Minute
	set, err := provider.NewSet([]provider.Config{cfg}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.checker.Providers = set
	c := f.claims(nil)
	exp := c["exp"].(int64)
	f.record(t, rec("jti-0123456789", exp))
	raw := f.idp.sign(t, "ed", c)
	at := func(d time.Duration) verdict.Result {
		return f.checker.Check(context.Background(), raw, &f.pol, time.Unix(exp, 0).Add(d), nil)
	}
	if r := f.check(raw); !r.Good() {
		t.Fatalf("fresh: %+v", r)
	}
	if r := at(time.Minute); !r.Good() || !r.Cached {
		t.Fatalf("a minute past exp, within the provider's skew: %+v", r)
	}
	if r := at(2*time.Minute + time.Second); r.Reason != event.ReasonExpired || !r.Cached {
		t.Fatalf("past exp and skew while cached: %+v, want expired", r)
	}
	// nbf and iat are checked with the same allowance.
	if r := at(-time.Duration(exp-f.now.Unix())*time.Second - 3*time.Minute); r.Reason != event.ReasonNotYetValid || !r.Cached {
		t.Fatalf("before iat beyond the skew while cached: %+v, want not_yet_valid", r)
	}
}

// A token without kid verifies under the one key of its algorithm; once
// the provider publishes a second key of that algorithm, the cold path
// can no longer pick one, and neither does the cached token.
func TestCachedNoKIDNeedsOneKey(t *testing.T) {
	f := newFixture(t, provider.Webhook)
	c := f.claims(nil)
	f.record(t, rec("jti-0123456789", c["exp"].(int64)))
	raw := signWith(t, f.idp.keys["ed"], jose.EdDSA, "", c)
	for i := range 2 {
		if r := f.check(raw); !r.Good() || r.Cached != (i == 1) {
			t.Fatalf("token without kid, request %d: %+v", i, r)
		}
	}
	_, second, _ := ed25519.GenerateKey(rand.Reader)
	f.idp.mu.Lock()
	f.idp.keys["ed2"], f.idp.algs["ed2"] = second, jose.EdDSA
	f.idp.mu.Unlock()
	f.ahead.Store(int64(jwks.MaxAge))
	if r := f.check(raw); r.Reason != event.ReasonUnknownKey {
		t.Fatalf("cached token without kid, two keys of its alg: %+v, want unknown_key", r)
	}
}
