package verdict

import (
	"context"
	"crypto"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

// Providers checks the tokens of identity providers the shop keeps
// (package provider): their signature under the provider's published keys
// and what provenance key the ledger knows them by.
type Providers interface {
	// Verify decides on raw when its iss names a configured provider (ok
	// true); with ok false the token goes through custos's own checks.
	Verify(ctx context.Context, raw string, now time.Time) (t ProviderToken, ok bool)
	// Holds reports whether k is still in the key set its provider
	// currently publishes (the set Verify reads), so a token verified
	// earlier under k may be served from the cache. False for a key the
	// provider removed, a provider no longer configured, or a key set
	// that cannot be had.
	Holds(ctx context.Context, k *ProviderKey) bool
}

// ProviderToken is what a provider's token says, as far as Providers
// could read and verify it.
type ProviderToken struct {
	// Claims are nil when the token could not be parsed. Audience holds
	// the audience the provider is configured for when the token names it.
	Claims *token.Claims
	KID    string
	// Reason is malformed, unknown_key or bad_signature, or "" when the
	// signature verified under the provider's key.
	Reason event.Reason
	// AudienceOK: the token's aud names the provider's configured audience.
	AudienceOK bool
	// Binding is the ledger key the provider's record of this token is
	// kept under: it covers (iss, id) and the recorded sub, aud and
	// client_id, so a token that differs in any of them has another key.
	Binding ledger.Hash
	// Key is the key of the provider's set the signature verified under,
	// when Reason is "": the cache keeps it and asks Holds on every later
	// request.
	Key *ProviderKey
	// ClockSkew is the provider's allowance on exp, nbf and iat; 0 takes
	// the policy's leeway.
	ClockSkew time.Duration
	// Signatures is how many signatures Verify checked (Checker.Signatures).
	Signatures int
}

// ProviderKey is one key of a provider's published set, as a token's
// signature verified under it.
type ProviderKey struct {
	Issuer string // the provider's iss
	KID    string // "" when the token named none
	Alg    string // the token's JWS alg
	Public crypto.PublicKey
}

// indexed is a Provenance whose in-memory index also holds the recorded
// exp of each live entry (ledger.Ledger, remote.Client).
type indexed interface {
	Index() *ledger.Index
}

// checkProvider is Check for a provider's token read cold: the signature
// (by Providers), then the checks every request repeats. A token that
// passes them all goes into the cache (only those: a holder of the
// provider's key cannot fill it with tokens nobody recorded); a warm hit
// skips the signature alone.
func (c *Checker) checkProvider(ctx context.Context, r *Result, pt ProviderToken, pol *Policy, now time.Time, fail func(event.Reason) bool) {
	if c.Signatures != nil && pt.Signatures > 0 {
		c.Signatures.Add(uint64(pt.Signatures))
	}
	r.Claims, r.KID = pt.Claims, pt.KID
	if pt.Reason != "" {
		if fail(pt.Reason) || pt.Claims == nil {
			return
		}
	} else {
		r.Verified = true
	}
	c.providerClaims(ctx, r, pt.Claims, pt.AudienceOK, pt.Binding, pt.ClockSkew, pol, now, fail)
	if r.Verified && r.Reason == "" && pt.Key != nil {
		c.Cache.put(r.Hash, cached{claims: *pt.Claims, kid: pt.KID, prov: &cachedProvider{
			key: *pt.Key, binding: pt.Binding, audienceOK: pt.AudienceOK, skew: pt.ClockSkew}})
	}
}

// cachedProvider is what the cache keeps of a provider's token besides
// its claims: the key it verified under and what decides its provenance.
type cachedProvider struct {
	key        ProviderKey
	binding    ledger.Hash
	audienceOK bool
	skew       time.Duration
}

// warmProvider serves a provider's token found in the cache: no signature
// is verified, but its key must still be in the provider's set, and times,
// audience and provenance are checked as on the cold path. ok false: the
// key is gone from the cache's view and the token must be read cold.
func (c *Checker) warmProvider(ctx context.Context, r *Result, e *cached, pol *Policy, now time.Time, fail func(event.Reason) bool) bool {
	p := e.prov
	if !c.Providers.Holds(ctx, &p.key) {
		return false
	}
	cl := e.claims
	r.Claims, r.KID, r.Verified, r.Cached = &cl, e.kid, true, true
	c.providerClaims(ctx, r, &cl, p.audienceOK, p.binding, p.skew, pol, now, fail)
	return true
}

// providerClaims checks times (with the provider's clock skew) and
// audience, then provenance under the binding key, refusing as not_issued
// a token whose exp is later than the one recorded.
func (c *Checker) providerClaims(ctx context.Context, r *Result, cl *token.Claims, audienceOK bool, binding ledger.Hash, skew time.Duration, pol *Policy, now time.Time, fail func(event.Reason) bool) {
	t := now.Unix()
	if skew == 0 {
		skew = pol.Leeway
	}
	lw := int64(skew / time.Second)
	if t-lw >= cl.ExpiresAt && fail(event.ReasonExpired) {
		return
	}
	if (cl.NotBefore > t+lw || cl.IssuedAt > t+lw) && fail(event.ReasonNotYetValid) {
		return
	}
	if !audienceOK && fail(event.ReasonWrongAudience) {
		return
	}
	if c.provenance(ctx, binding, pol, fail) {
		return
	}
	// Live: the token may not outlive what was recorded.
	ix, ok := c.Ledger.(indexed)
	if !ok {
		fail(event.ReasonNotIssued)
		return
	}
	st, exp := ix.Index().Lookup(binding, time.Time{})
	if st == ledger.Unknown || cl.ExpiresAt > exp.Unix() {
		fail(event.ReasonNotIssued)
	}
}
