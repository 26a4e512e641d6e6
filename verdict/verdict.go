// Package verdict decides whether a custos access token is good at a given
// moment: its signature, the state of its key, its claims and its provenance
// (the issuance ledger knows it and it is not revoked). The gateway and the
// authority's RFC 7662 introspection both decide through [Checker.Check], so
// they give the same answer for the same token at the same moment.
//
// Checks run in this order, each producing its contract reason (see
// event.Reason): malformed; unknown_key, revoked_key; bad_signature;
// expired, not_yet_valid, wrong_issuer, wrong_audience; not_issued,
// revoked_token, ledger_unavailable. [Binding.Check] then decides on the
// proof of possession a key-bound token needs (dpop_required,
// bad_dpop_proof). Checks about the request rather than the token (blocked
// source, route, decoy member, subject binding) belong to the gateway.
package verdict

import (
	"context"
	"crypto"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

// Defaults of [Policy].
const (
	DefaultLeeway            = 30 * time.Second
	MaxLeeway                = 5 * time.Minute
	DefaultProvenanceTimeout = 2 * time.Second
)

// KeySet finds the verification key a token's kid names, in whatever state
// it is (a revoked key must still be found to be refused as revoked_key).
type KeySet interface {
	Lookup(kid string) (keys.Key, bool)
}

// keyFetcher is a KeySet that can ask its source again for a kid it does
// not know (a key made moments ago at another replica), failing closed.
type keyFetcher interface {
	FetchKID(ctx context.Context, kid string) (keys.Key, bool)
}

// Provenance tells whether the issuance ledger knows a token. Any error
// (ledger.ErrUnavailable in particular) gives ledger_unavailable.
type Provenance interface {
	Status(ctx context.Context, h ledger.Hash) (ledger.Status, error)
}

// localProvenance is a Provenance that can often answer from memory; the
// check then skips setting up the deadline that a remote lookup needs.
type localProvenance interface {
	// LocalStatus answers from memory, or says it cannot (ok false).
	LocalStatus(h ledger.Hash) (st ledger.Status, ok bool)
}

// Policy is what a good token's claims must say.
type Policy struct {
	Issuer string // the iss tokens must carry
	// Audience lists the accepted aud values; a token for any other is
	// refused as wrong_audience. Empty refuses every token.
	Audience []string
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway time.Duration
	// ProvenanceTimeout bounds a ledger lookup that cannot be answered
	// from memory (0: DefaultProvenanceTimeout).
	ProvenanceTimeout time.Duration
}

// Validate checks the policy, naming the field at fault.
func (p Policy) Validate() error {
	if p.Issuer == "" {
		return fmt.Errorf("issuer is required")
	}
	if p.Leeway < 0 || p.Leeway > MaxLeeway {
		return fmt.Errorf("leeway %s outside 0..%s", p.Leeway, MaxLeeway)
	}
	if p.ProvenanceTimeout < 0 {
		return fmt.Errorf("provenance_timeout is negative")
	}
	return nil
}

// Checker decides on tokens. Keys and Ledger are required; Cache is optional.
type Checker struct {
	Keys   KeySet
	Ledger Provenance
	// Cache, when set, remembers tokens whose signature verified (a
	// provider's only once every check passed); key state, claims and
	// provenance are still checked on every call, and a provider's key
	// must still be in its published set (Providers.Holds).
	Cache *Cache
	// Providers, when set, checks tokens whose iss names an identity
	// provider the shop keeps; every other token is checked as custos's.
	Providers Providers
	// Signatures, when set, counts the token signatures Check verifies,
	// custos's and the providers' (a token found in Cache costs none).
	Signatures *atomic.Uint64
}

// Result is the verdict on one token.
type Result struct {
	// Reason is the first failed check that refuses the token, or "" when
	// the token is good (or every failure was observed only).
	Reason event.Reason
	// Observed is the first failed check that observe let pass, or "".
	Observed event.Reason
	// Claims are nil when the token could not be parsed; they are
	// verified only when Verified is true.
	Claims   *token.Claims
	KID      string
	Verified bool // the signature verified under a key the set knows
	Cached   bool // the signature was verified earlier (Checker.Cache)
	Hash     ledger.Hash
}

// Good reports whether the token may be used.
func (r *Result) Good() bool { return r.Reason == "" && r.Claims != nil }

// Check decides on raw at now under pol. observe, when not nil, says which
// failed checks only report instead of refusing (the gateway's observe
// mode); the check then goes on as far as it can.
func (c *Checker) Check(ctx context.Context, raw string, pol *Policy, now time.Time, observe func(event.Reason) bool) Result {
	r := Result{Hash: ledger.HashToken(raw)}
	fail := func(reason event.Reason) bool {
		if observe != nil && observe(reason) {
			if r.Observed == "" {
				r.Observed = reason
			}
			return false
		}
		r.Reason = reason
		return true
	}
	e, hit := c.Cache.get(r.Hash)
	if hit && e.prov != nil {
		// A provider's token seen before: no signature, the rest again.
		if c.Providers != nil && c.warmProvider(ctx, &r, &e, pol, now, fail) {
			return r
		}
		hit = false
	}
	var p *token.Parsed
	if !hit {
		// custos's own tokens (its iss, strictly read) are never offered
		// to the providers.
		p = parse(raw)
		if c.Providers != nil && (p == nil || p.Claims.Issuer != pol.Issuer) {
			if pt, ok := c.Providers.Verify(ctx, raw, now); ok {
				c.checkProvider(ctx, &r, pt, pol, now, fail)
				return r
			}
		}
		if p == nil {
			fail(event.ReasonMalformed)
			return r
		}
	}
	var ce *cached
	if hit {
		ce = &e
	}
	claims, kid, reason, cachedHit := c.verify(ctx, raw, r.Hash, ce, p)
	r.Claims, r.KID, r.Cached = claims, kid, cachedHit
	if reason != "" {
		if fail(reason) || claims == nil {
			return r
		}
	} else {
		r.Verified = true
	}
	if c.claimsCheck(claims, pol, now, fail) {
		return r
	}
	c.provenance(ctx, r.Hash, pol, fail)
	return r
}

// parse reads raw as a custos token, or returns nil.
func parse(raw string) *token.Parsed {
	if len(raw) > token.MaxSize {
		return nil
	}
	p, err := token.Parse(raw)
	if err != nil {
		return nil
	}
	return p
}

// verify verifies raw (p when already parsed), or serves it from e, its
// entry among tokens already verified. It returns the claims (nil when
// unparsable), the kid and the failure reason, empty when the signature is
// good. Key state is checked on every call.
//
// A kid the key set does not know is asked of its source once more when the
// set can do that (a standalone gateway's [keyFetcher]); if that fails too
// the token is refused as unknown_key.
func (c *Checker) verify(ctx context.Context, raw string, h ledger.Hash, e *cached, p *token.Parsed) (*token.Claims, string, event.Reason, bool) {
	if e != nil {
		k, found := c.Keys.Lookup(e.kid)
		if found && k.Alg == e.alg && samePublic(k.Public, e.pub) {
			cl := e.claims
			return &cl, e.kid, keyStateReason(k.State), true
		}
	}
	if p == nil {
		if p = parse(raw); p == nil {
			return nil, "", event.ReasonMalformed, false
		}
	}
	cl := &p.Claims
	k, found := c.Keys.Lookup(p.Header.KID)
	if f, ok := c.Keys.(keyFetcher); ok && !found && p.Header.KID != "" {
		k, found = f.FetchKID(ctx, p.Header.KID)
	}
	if !found || p.Header.KID == "" {
		return cl, p.Header.KID, event.ReasonUnknownKey, false
	}
	stateReason := keyStateReason(k.State)
	if c.Signatures != nil {
		c.Signatures.Add(1)
	}
	if err := token.VerifySignature(p, k.Alg, k.Public); err != nil {
		if stateReason != "" {
			return cl, k.KID, stateReason, false
		}
		return cl, k.KID, event.ReasonBadSignature, false
	}
	c.Cache.put(h, cached{claims: *cl, kid: k.KID, alg: k.Alg, pub: k.Public})
	return cl, k.KID, stateReason, false
}

func keyStateReason(s keys.State) event.Reason {
	switch s {
	case keys.Active, keys.VerifyOnly:
		return ""
	}
	// Revoked, retired, or a state this checker does not know: refuse.
	return event.ReasonRevokedKey
}

type equaler interface{ Equal(crypto.PublicKey) bool }

func samePublic(a, b crypto.PublicKey) bool {
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// claimsCheck checks times, issuer and audience; it reports a refusal.
func (c *Checker) claimsCheck(cl *token.Claims, pol *Policy, now time.Time, fail func(event.Reason) bool) bool {
	t := now.Unix()
	lw := int64(pol.Leeway / time.Second)
	if t-lw >= cl.ExpiresAt && fail(event.ReasonExpired) {
		return true
	}
	if (cl.NotBefore > t+lw || cl.IssuedAt > t+lw) && fail(event.ReasonNotYetValid) {
		return true
	}
	if cl.Issuer != pol.Issuer && fail(event.ReasonWrongIssuer) {
		return true
	}
	if !slices.Contains(pol.Audience, cl.Audience) && fail(event.ReasonWrongAudience) {
		return true
	}
	return false
}

// provenance asks the ledger about the token; it reports a refusal. Any
// error fails closed.
func (c *Checker) provenance(ctx context.Context, h ledger.Hash, pol *Policy, fail func(event.Reason) bool) bool {
	var (
		st  ledger.Status
		err error
		ok  bool
	)
	if lp, can := c.Ledger.(localProvenance); can {
		st, ok = lp.LocalStatus(h)
	}
	if !ok {
		timeout := pol.ProvenanceTimeout
		if timeout == 0 {
			timeout = DefaultProvenanceTimeout
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		st, err = c.Ledger.Status(ctx, h)
		cancel()
	}
	switch {
	case err != nil:
		return fail(event.ReasonLedgerUnavailable)
	case st == ledger.Live:
		return false
	case st == ledger.Revoked:
		return fail(event.ReasonRevokedToken)
	}
	return fail(event.ReasonNotIssued)
}
