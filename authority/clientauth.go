package authority

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
)

// maxAssertionLife bounds how far in the future a client assertion's exp
// may lie (RFC 7523 section 3 lets the server refuse a far exp): a stolen
// assertion is worth at most this long, and its jti is remembered as long.
const maxAssertionLife = 5 * time.Minute

// authenticate finds the client of a token request by exactly one method
// (RFC 6749 section 2.3): HTTP Basic with client_id and secret
// (client_secret_basic), both in the body (client_secret_post), or a signed
// assertion (private_key_jwt). Every failure is invalid_client, with no hint
// of which part was wrong.
func (h *Handler) authenticate(ctx context.Context, r *http.Request, form url.Values) (*Client, error) {
	bad := oauthErr("invalid_client", "client authentication failed")
	authz := r.Header.Values("Authorization")
	_, hasSecret := form["client_secret"]
	_, hasAssertion := form["client_assertion"]
	_, hasAssertionType := form["client_assertion_type"]
	methods := 0
	for _, m := range []bool{len(authz) > 0, hasSecret, hasAssertion || hasAssertionType} {
		if m {
			methods++
		}
	}
	switch {
	case methods == 0:
		return nil, oauthErr("invalid_client", "client authentication is required")
	case methods > 1:
		return nil, oauthErr("invalid_request", "more than one client authentication method")
	}
	var c *Client
	var err error
	switch {
	case len(authz) > 0:
		c, err = h.basicClient(ctx, r, form)
	case hasSecret:
		c, err = h.Creds.ClientSecret(ctx, form.Get("client_id"), form.Get("client_secret"))
	default:
		c, err = h.assertionClient(ctx, form)
	}
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) {
			return nil, err
		}
		if errors.Is(err, ErrBadCredential) {
			return nil, bad
		}
		return nil, err
	}
	if (len(authz) > 0 || hasSecret) && c.HasKeys() {
		// A client that registered keys proves itself with them only.
		return nil, bad
	}
	return c, nil
}

// basicClient reads client_secret_basic: both halves of the Basic
// credentials are form-urlencoded (RFC 6749 section 2.3.1), and a client_id
// in the body must name the same client.
func (h *Handler) basicClient(ctx context.Context, r *http.Request, form url.Values) (*Client, error) {
	bad := oauthErr("invalid_client", "client authentication failed")
	if len(r.Header.Values("Authorization")) != 1 {
		return nil, oauthErr("invalid_request", "more than one Authorization header")
	}
	u, p, ok := r.BasicAuth()
	if !ok {
		return nil, bad
	}
	id, err1 := url.QueryUnescape(u)
	secret, err2 := url.QueryUnescape(p)
	if err1 != nil || err2 != nil {
		return nil, bad
	}
	if v, ok := form["client_id"]; ok && v[0] != id {
		return nil, oauthErr("invalid_request", "client_id differs from the authenticated client")
	}
	return h.Creds.ClientSecret(ctx, id, secret)
}

// assertionClaims are the claims of a client assertion (RFC 7523 section 3).
type assertionClaims struct {
	jwt.Claims
}

// assertionClient checks private_key_jwt (RFC 7523 section 2.2 and 3): the
// assertion is signed by a key the client registered (or publishes at its
// jwks_uri), iss and sub are the client_id, aud names this token endpoint or
// the issuer, exp is present and near, and the jti was never used before at
// any replica.
func (h *Handler) assertionClient(ctx context.Context, form url.Values) (*Client, error) {
	bad := oauthErr("invalid_client", "client authentication failed")
	if form.Get("client_assertion_type") != AssertionTypeJWTBearer {
		return nil, oauthErr("invalid_client", "client_assertion_type must be %s", AssertionTypeJWTBearer)
	}
	raw := form.Get("client_assertion")
	if raw == "" {
		return nil, bad
	}
	tok, err := jwt.ParseSigned(raw, assertionAlgs)
	if err != nil || len(raw) > maxJWTBytes {
		return nil, bad
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, bad
	}
	id := unverified.Subject
	if v, ok := form["client_id"]; ok && v[0] != id {
		return nil, bad
	}
	c, err := h.Creds.ClientByID(ctx, id)
	if err != nil {
		return nil, err
	}
	var src keySource
	switch {
	case len(c.JWKS) > 0:
		set, err := parseClientKeys(c.JWKS)
		if err != nil {
			return nil, bad
		}
		src = staticKeys{set}
	case c.JWKSURI != "":
		src = h.Auth.remote.get(c.JWKSURI)
	default:
		return nil, bad
	}
	var cl assertionClaims
	if _, err := verifyJWT(ctx, raw, assertionAlgs, src, &cl); err != nil {
		// A key set that cannot be fetched refuses too: the client's to fix.
		if h.Log != nil {
			h.Log.Info("client assertion refused", "client_id", id, "err", err)
		}
		return nil, bad
	}
	now := h.Auth.now()
	switch {
	case cl.Issuer != id || cl.Subject != id:
		return nil, bad
	case !cl.Audience.Contains(h.Auth.TokenEndpoint()) && !cl.Audience.Contains(h.Auth.Issuer):
		return nil, bad
	case cl.Expiry == nil || cl.ID == "" || len(cl.ID) > 256:
		return nil, bad
	case !now.Before(cl.Expiry.Time().Add(clockSkew)):
		return nil, bad
	case cl.Expiry.Time().After(now.Add(maxAssertionLife + clockSkew)):
		return nil, bad
	case cl.NotBefore != nil && cl.NotBefore.Time().After(now.Add(clockSkew)):
		return nil, bad
	case cl.IssuedAt != nil && cl.IssuedAt.Time().After(now.Add(clockSkew)):
		return nil, bad
	}
	first, err := h.Creds.seen.first(ctx, "assertion\x00"+id, cl.ID, cl.Expiry.Time().Add(clockSkew))
	if err != nil {
		return nil, err
	}
	if !first {
		return nil, oauthErr("invalid_client", "client assertion already used")
	}
	return c, nil
}
