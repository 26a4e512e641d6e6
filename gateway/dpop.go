package gateway

// DPoP (RFC 9449) at the gateway: a token bound to a key (cnf.jkt) is used
// only with a proof signed by that key for this very request. The proof's
// htu is compared with the URL the client addressed: Config.DPoP.PublicURL
// (scheme and host) and the path of the request target when set, else the
// request's scheme (Request.Scheme) and Host. The check itself is
// verdict.Binding's, shared with every entry point.

import (
	"context"
	"crypto/rand"
	"net/http"
	"strings"
	"time"

	"github.com/custos-dev/custos/dpop"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/verdict"
)

// Headers of DPoP.
const (
	HeaderDPoP      = "Dpop"       // the proof (canonical form of "DPoP")
	HeaderDPoPNonce = "Dpop-Nonce" // a server nonce for the next proof
)

// dpopAlgs is the algs parameter of a DPoP challenge.
var dpopAlgs = strings.Join(dpop.Algs, " ")

// newBinding is the gateway's proof checker: an in-memory replay cache
// until SetReplay gives a shared one, and nonces when configured.
func newBinding(c DPoPConfig, now func() time.Time) *verdict.Binding {
	b := &verdict.Binding{Replay: dpop.NewMemory(c.ReplayCacheSize, now), Window: c.Window}
	if c.Nonce {
		secret := c.NonceSecret
		if secret == nil {
			secret = make([]byte, 32)
			_, _ = rand.Read(secret)
		}
		b.Nonces = dpop.NewNonces(secret, 0)
	}
	return b
}

// SignatureChecks is how many token signatures and DPoP proof signatures the
// gateway has verified so far: what its cold and warm paths cost, counted
// rather than timed (a token found in the verified-token cache costs none).
func (g *Gateway) SignatureChecks() (tokens, proofs uint64) {
	return g.tokenSigs.Load(), g.proofSigs.Load()
}

// SetReplay makes the gateway remember proofs in r, shared with the other
// replicas (dpop/redis), instead of its own memory. Call it before serving.
func (g *Gateway) SetReplay(r dpop.Replay) { g.binding.Replay = r }

// requestURL is the absolute URL the client addressed, for htu: the
// configured public URL or the request's scheme and Host, then the path of
// the target as sent (dpop.CanonicalURL normalises both sides).
func (g *Gateway) requestURL(r *Request, escapedPath string) string {
	if g.cfg.DPoP.PublicURL != "" {
		return strings.TrimSuffix(g.cfg.DPoP.PublicURL, "/") + escapedPath
	}
	scheme := r.Scheme
	if scheme == "" {
		scheme = "http"
	}
	return scheme + "://" + r.Host + escapedPath
}

// checkBinding runs the DPoP check of a good token; it reports a refusal.
func (g *Gateway) checkBinding(ctx context.Context, r *Request, d *Decision, raw, scheme string, v *verdict.Result, escapedPath string) bool {
	if v.Claims.Cnf.JKT == "" && !strings.EqualFold(scheme, "DPoP") {
		return false // the common case: a bearer token under Bearer
	}
	p := verdict.Possession{Scheme: scheme, Proofs: r.Header.Values(HeaderDPoP), Method: r.Method,
		URL: g.requestURL(r, escapedPath)}
	res := g.binding.Check(ctx, v, raw, p, d.now)
	if res.Reason == "" {
		return false
	}
	d.useNonce = res.UseNonce
	return g.fail(d, res.Reason)
}

// dpopChallenge sets the DPoP challenge of a refusal for a DPoP reason
// (RFC 9449 section 7.1), with a fresh nonce when nonces are on.
func (g *Gateway) dpopChallenge(h http.Header, reason event.Reason, useNonce bool) {
	if reason != event.ReasonDPoPRequired && reason != event.ReasonBadDPoPProof {
		return
	}
	code := "invalid_token"
	switch {
	case useNonce:
		code = "use_dpop_nonce"
	case reason == event.ReasonBadDPoPProof:
		code = "invalid_dpop_proof"
	}
	h.Set("WWW-Authenticate", `DPoP error="`+code+`", error_description="`+string(reason)+`", algs="`+dpopAlgs+`"`)
	if g.binding.Nonces != nil {
		h.Set(HeaderDPoPNonce, g.binding.Nonces.Issue(g.now()))
	}
}
