package authority

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/custos-dev/custos/jwks"
	"github.com/custos-dev/custos/token"
)

// ExternalIssuer is an identity provider whose ID tokens the token exchange
// accepts (RFC 8693 with subject_token_type id_token or jwt): the shop's
// login, whose users custos then issues access tokens for.
type ExternalIssuer struct {
	// Issuer is the provider's iss, compared exactly.
	Issuer string
	// JWKSURL is where its signing keys are published (fetched, cached for
	// 5 minutes, fetched again for an unknown kid at most every 10 s).
	JWKSURL string
	// Audience must be among the ID token's aud (the login service's
	// client_id at the provider).
	Audience string
	// ClockSkew allowed on exp, nbf and iat (default 30s, at most 5m).
	ClockSkew time.Duration
	// SubjectClaim names the claim holding the member's id (default sub);
	// its value must fit token.CheckSubject.
	SubjectClaim string
	// Algorithms allowed (default RS256, ES256, EdDSA; no others).
	Algorithms []string
}

// Bounds of external ID tokens.
const (
	DefaultClockSkew = 30 * time.Second
	MaxClockSkew     = 5 * time.Minute
	// maxIDTokenLife: an ID token valid for longer is refused, so the
	// record of its use need not be kept longer.
	maxIDTokenLife = 24 * time.Hour
)

type external struct {
	ExternalIssuer
	algs []jose.SignatureAlgorithm
}

// checkExternals validates the configured issuers and fills defaults.
func checkExternals(list []ExternalIssuer) (map[string]*external, error) {
	out := make(map[string]*external, len(list))
	for i, e := range list {
		field := func(f string) string { return fmt.Sprintf("oauth.external_issuers[%d].%s", i, f) }
		u, err := url.Parse(e.Issuer)
		if e.Issuer == "" || err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("%s: %q is not an absolute URL", field("issuer"), e.Issuer)
		}
		if out[e.Issuer] != nil {
			return nil, fmt.Errorf("%s: %q configured twice", field("issuer"), e.Issuer)
		}
		if err := jwks.CheckURL(e.JWKSURL); err != nil {
			return nil, fmt.Errorf("%s: %w", field("jwks_url"), err)
		}
		if e.Audience == "" {
			return nil, fmt.Errorf("%s: required", field("audience"))
		}
		if e.ClockSkew == 0 {
			e.ClockSkew = DefaultClockSkew
		}
		if e.ClockSkew < 0 || e.ClockSkew > MaxClockSkew {
			return nil, fmt.Errorf("%s: %s outside 0..%s", field("clock_skew"), e.ClockSkew, MaxClockSkew)
		}
		if e.SubjectClaim == "" {
			e.SubjectClaim = "sub"
		}
		x := &external{ExternalIssuer: e}
		if len(e.Algorithms) == 0 {
			x.algs = assertionAlgs
		}
		for _, a := range e.Algorithms {
			if !slices.Contains(assertionAlgs, jose.SignatureAlgorithm(a)) {
				return nil, fmt.Errorf("%s: %q is not one of RS256, ES256, EdDSA", field("algorithms"), a)
			}
			x.algs = append(x.algs, jose.SignatureAlgorithm(a))
		}
		out[e.Issuer] = x
	}
	return out, nil
}

// externalSubject is what an accepted subject token says.
type externalSubject struct {
	issuer, subject, sid string
	once                 string    // the jti, or the token's hash when it has none
	until                time.Time // when the token expires, skew included
}

// externalSubject validates an identity provider's ID token: a configured
// issuer, a signature by its published key with an allowed algorithm, the
// configured audience, exp, iat and nbf within the skew, a JWT (not an
// access token) by its typ, and a subject that fits the subject grammar.
// Every failure is invalid_request (RFC 8693 section 2.2.2); the reason is
// in the description.
func (a *Authority) externalSubject(ctx context.Context, raw string) (externalSubject, error) {
	bad := func(format string, v ...any) error {
		return oauthErr("invalid_request", "subject_token: "+format, v...)
	}
	if len(raw) > maxJWTBytes {
		return externalSubject{}, bad("larger than %d bytes", maxJWTBytes)
	}
	tok, err := jwt.ParseSigned(raw, assertionAlgs)
	if err != nil {
		return externalSubject{}, bad("not a signed JWT with an allowed algorithm")
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return externalSubject{}, bad("claims are not a JSON object")
	}
	x := a.externals[unverified.Issuer]
	if x == nil {
		return externalSubject{}, bad("issuer is not configured")
	}
	if typ, _ := tok.Headers[0].ExtraHeaders[jose.HeaderType].(string); typ != "" {
		if t := strings.ToLower(typ); t != "jwt" && t != "application/jwt" {
			return externalSubject{}, bad("typ %q is not an ID token's", typ)
		}
	}
	var cl jwt.Claims
	var all map[string]any
	if _, err := verifyJWT(ctx, raw, x.algs, a.remote.get(x.JWKSURL), &cl, &all); err != nil {
		if a.log != nil {
			a.log.Info("subject token refused", "issuer", x.Issuer, "err", err)
		}
		return externalSubject{}, bad("signature does not verify with the issuer's keys")
	}
	now, skew := a.now(), x.ClockSkew
	switch {
	case cl.Issuer != x.Issuer:
		return externalSubject{}, bad("issuer is not configured")
	case !cl.Audience.Contains(x.Audience):
		return externalSubject{}, bad("audience does not name %q", x.Audience)
	case cl.Expiry == nil:
		return externalSubject{}, bad("exp is required")
	case cl.IssuedAt == nil:
		return externalSubject{}, bad("iat is required")
	case !now.Before(cl.Expiry.Time().Add(skew)):
		return externalSubject{}, bad("expired")
	case cl.IssuedAt.Time().After(now.Add(skew)):
		return externalSubject{}, bad("issued in the future")
	case cl.NotBefore != nil && cl.NotBefore.Time().After(now.Add(skew)):
		return externalSubject{}, bad("not valid yet")
	case cl.Expiry.Time().Sub(cl.IssuedAt.Time()) > maxIDTokenLife:
		return externalSubject{}, bad("valid for longer than %s", maxIDTokenLife)
	}
	sub, ok := all[x.SubjectClaim].(string)
	if !ok || sub == "" {
		return externalSubject{}, bad("claim %q is not a string", x.SubjectClaim)
	}
	if err := token.CheckSubject(sub); err != nil {
		return externalSubject{}, bad("%v", err)
	}
	out := externalSubject{issuer: x.Issuer, subject: sub, once: cl.ID, until: cl.Expiry.Time().Add(skew)}
	if out.once == "" {
		h := sha256.Sum256([]byte(raw))
		out.once = "sha256:" + hex.EncodeToString(h[:])
	}
	if sid, ok := all["sid"].(string); ok && len(sid) <= MaxSessionIDBytes && printable(sid) {
		out.sid = sid
	}
	return out, nil
}
