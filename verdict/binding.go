package verdict

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"time"

	"github.com/custos-dev/custos/dpop"
	"github.com/custos-dev/custos/event"
)

// Possession is what a request carries to prove that its sender holds the
// key a token is bound to (RFC 9449): the Authorization scheme the token
// came under, the DPoP header's values, and the request the proof must name.
type Possession struct {
	Scheme string   // "Bearer" or "DPoP", any letter case
	Proofs []string // values of the DPoP header, as received
	Method string
	// URL is the absolute URL of the request as the client addressed it;
	// htu is compared with it after dpop.CanonicalURL.
	URL string
}

// Binding is how bound tokens are checked: the proofs' replay cache (shared
// between replicas for a scale-out gateway), the iat window and, when set,
// the server nonces a proof must carry.
type Binding struct {
	Replay dpop.Replay
	Window time.Duration // 0: dpop.DefaultWindow
	Nonces *dpop.Nonces  // nil: no nonce required
	// Signatures, when set, counts the proof signatures Check verifies.
	Signatures *atomic.Uint64
}

// BindingResult is the outcome of [Binding.Check].
type BindingResult struct {
	Reason event.Reason // "", dpop_required or bad_dpop_proof
	// UseNonce: the proof lacked the current server nonce; the answer
	// should carry a fresh one (DPoP-Nonce) and error use_dpop_nonce.
	UseNonce bool
	Err      error // what was wrong, for logs; never holds the proof
}

// Check decides whether the request may use raw, a token that passed
// [Checker.Check] with claims r.Claims. A token bound to a key (cnf.jkt)
// needs the DPoP scheme and exactly one proof, signed by that key, for this
// method and URL, carrying ath of raw, fresh and never seen before (or
// dpop_required / bad_dpop_proof). A token that is not bound must come
// under the Bearer scheme: a DPoP-scheme request claims a binding the token
// does not have (bad_dpop_proof). A nil Binding refuses every bound token
// (fail closed).
func (b *Binding) Check(ctx context.Context, r *Result, raw string, p Possession, now time.Time) BindingResult {
	if r.Claims == nil {
		return BindingResult{}
	}
	jkt := r.Claims.Cnf.JKT
	isDPoP := strings.EqualFold(p.Scheme, "DPoP")
	switch {
	case jkt == "" && !isDPoP:
		return BindingResult{}
	case jkt == "":
		return BindingResult{Reason: event.ReasonBadDPoPProof, Err: errors.New("DPoP scheme with a token bound to no key")}
	case !isDPoP:
		return BindingResult{Reason: event.ReasonDPoPRequired, Err: errors.New("bound token under the Bearer scheme")}
	case len(p.Proofs) == 0:
		return BindingResult{Reason: event.ReasonDPoPRequired, Err: errors.New("no DPoP proof")}
	case len(p.Proofs) > 1:
		return BindingResult{Reason: event.ReasonBadDPoPProof, Err: errors.New("more than one DPoP header")}
	case b == nil || b.Replay == nil:
		return BindingResult{Reason: event.ReasonBadDPoPProof, Err: errors.New("no replay cache to check proofs with")}
	}
	e := dpop.Expect{Method: p.Method, URL: p.URL, AccessToken: raw, Now: now, Window: b.Window, Signatures: b.Signatures}
	if b.Nonces != nil {
		e.Nonce = func(n string) bool { return b.Nonces.Valid(n, now) }
	}
	proof, err := dpop.Verify(p.Proofs[0], e)
	if err != nil {
		return BindingResult{Reason: event.ReasonBadDPoPProof, UseNonce: errors.Is(err, dpop.ErrUseNonce), Err: err}
	}
	if proof.JKT != jkt {
		return BindingResult{Reason: event.ReasonBadDPoPProof, Err: errors.New("proof signed by another key than cnf.jkt")}
	}
	seen, err := b.Replay.Seen(ctx, dpop.ReplayKey(proof), dpop.ReplayUntil(proof, b.Window))
	switch {
	case err != nil:
		return BindingResult{Reason: event.ReasonBadDPoPProof, Err: err}
	case seen:
		return BindingResult{Reason: event.ReasonBadDPoPProof, Err: errors.New("proof replayed")}
	}
	return BindingResult{}
}
