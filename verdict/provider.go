package verdict

import (
	"context"
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
}

// indexed is a Provenance whose in-memory index also holds the recorded
// exp of each live entry (ledger.Ledger, remote.Client).
type indexed interface {
	Index() *ledger.Index
}

// checkProvider is Check for a provider's token: signature, times and
// audience, then provenance under its binding key, refusing as not_issued
// a token whose exp is later than the one recorded.
func (c *Checker) checkProvider(ctx context.Context, r *Result, pt ProviderToken, pol *Policy, now time.Time, fail func(event.Reason) bool) {
	r.Claims, r.KID = pt.Claims, pt.KID
	if pt.Reason != "" {
		if fail(pt.Reason) || pt.Claims == nil {
			return
		}
	} else {
		r.Verified = true
	}
	cl := pt.Claims
	t := now.Unix()
	lw := int64(pol.Leeway / time.Second)
	if t-lw >= cl.ExpiresAt && fail(event.ReasonExpired) {
		return
	}
	if (cl.NotBefore > t+lw || cl.IssuedAt > t+lw) && fail(event.ReasonNotYetValid) {
		return
	}
	if !pt.AudienceOK && fail(event.ReasonWrongAudience) {
		return
	}
	if c.provenance(ctx, pt.Binding, pol, fail) {
		return
	}
	// Live: the token may not outlive what was recorded.
	ix, ok := c.Ledger.(indexed)
	if !ok {
		fail(event.ReasonNotIssued)
		return
	}
	st, exp := ix.Index().Lookup(pt.Binding, time.Time{})
	if st == ledger.Unknown || cl.ExpiresAt > exp.Unix() {
		fail(event.ReasonNotIssued)
	}
}

// has reports whether h is among the tokens already verified.
func (c *Cache) has(h ledger.Hash) bool {
	_, ok := c.get(h)
	return ok
}
