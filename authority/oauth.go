package authority

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/custos-dev/custos/dpop"
	"github.com/custos-dev/custos/token"
	"github.com/custos-dev/custos/wire"
)

// The standard token endpoint: POST /oauth2/token (RFC 6749 section 3.2),
// with the client credentials grant (section 4.4) and token exchange
// (RFC 8693), client authentication by client_secret_basic,
// client_secret_post or private_key_jwt (RFC 7523), and errors as RFC 6749
// section 5.2 writes them.

// TokenPath is the path of the standard token endpoint.
const TokenPath = "/oauth2/token"

// Grant types, token types and the assertion type the endpoint understands.
const (
	GrantClientCredentials = "client_credentials"
	GrantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeIDToken       = "urn:ietf:params:oauth:token-type:id_token"
	TokenTypeJWT           = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
	AssertionTypeJWTBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// Client authentication methods (RFC 8414 / the IANA registry names).
const (
	AuthSecretBasic = "client_secret_basic"
	AuthSecretPost  = "client_secret_post"
	AuthPrivateKey  = "private_key_jwt"
)

// maxFormBytes bounds a token request body: a client assertion, a subject
// token and a DPoP proof fit many times over.
const maxFormBytes = 64 << 10

// TokenEndpoint is the absolute URL of the standard token endpoint: the
// audience a client assertion names and the htu of a DPoP proof.
func (a *Authority) TokenEndpoint() string { return strings.TrimSuffix(a.Issuer, "/") + TokenPath }

// tokenResponse is the successful answer (RFC 6749 section 5.1, RFC 8693
// section 2.2.1).
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
}

func oauthErr(code, format string, a ...any) *Error {
	return &Error{Code: code, Description: fmt.Sprintf(format, a...)}
}

// parseForm reads a token request body: application/x-www-form-urlencoded,
// UTF-8, at most maxFormBytes, no parameter given twice (RFC 6749 section
// 3.2). Parameters without a value are dropped, as section 3.1 says they
// count as omitted. The URL's query is never read: credentials do not
// belong there.
func parseForm(r *http.Request) (url.Values, error) {
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || ct != "application/x-www-form-urlencoded" {
		return nil, oauthErr("invalid_request", "the body must be application/x-www-form-urlencoded")
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxFormBytes+1))
	if err != nil {
		return nil, oauthErr("invalid_request", "the body could not be read")
	}
	return parseFormBody(b)
}

// parseFormBody is parseForm after the headers (FuzzParseForm).
func parseFormBody(b []byte) (url.Values, error) {
	if len(b) > maxFormBytes {
		return nil, oauthErr("invalid_request", "body larger than %d bytes", maxFormBytes)
	}
	q, err := url.ParseQuery(string(b))
	if err != nil {
		return nil, oauthErr("invalid_request", "bad form body")
	}
	for k, vs := range q {
		if !utf8.ValidString(k) {
			return nil, oauthErr("invalid_request", "parameter name is not UTF-8")
		}
		if len(vs) > 1 {
			return nil, oauthErr("invalid_request", "parameter %q given %d times", k, len(vs))
		}
		if !utf8.ValidString(vs[0]) {
			return nil, oauthErr("invalid_request", "parameter %q is not UTF-8", k)
		}
		if vs[0] == "" {
			delete(q, k)
		}
	}
	return q, nil
}

// oauthToken serves POST /oauth2/token.
func (h *Handler) oauthToken(w http.ResponseWriter, r *http.Request) {
	form, err := parseForm(r)
	if err != nil {
		h.writeOAuthErr(w, r, err)
		return
	}
	c, err := h.authenticate(r.Context(), r, form)
	if err != nil {
		h.writeOAuthErr(w, r, err)
		return
	}
	out, err := h.grant(WithCaller(r.Context(), h.caller(r)), r, c, form)
	if err != nil {
		h.writeOAuthErr(w, r, err)
		return
	}
	if h.Nonces != nil && out.TokenType == "DPoP" {
		// The nonce for the client's next proof (RFC 9449 section 8.2).
		w.Header().Set("DPoP-Nonce", h.Nonces.Issue(h.Auth.now()))
	}
	w.Header().Set("Pragma", "no-cache")
	wire.WriteJSON(w, http.StatusOK, out)
}

// grant issues what form asks for to the authenticated client c.
func (h *Handler) grant(ctx context.Context, r *http.Request, c *Client, form url.Values) (tokenResponse, error) {
	gt := form.Get("grant_type")
	if gt == "" {
		return tokenResponse{}, oauthErr("invalid_request", "grant_type is required")
	}
	if gt != GrantClientCredentials && gt != GrantTokenExchange {
		return tokenResponse{}, oauthErr("unsupported_grant_type", "grant_type %q is not supported", gt)
	}
	if form.Has("resource") {
		return tokenResponse{}, oauthErr("invalid_target", "resource indicators are not supported; name the audience")
	}
	aud := form.Get("audience")
	if aud == "" && len(c.Audiences) == 1 {
		aud = c.Audiences[0]
	}
	if aud == "" {
		return tokenResponse{}, oauthErr("invalid_request", "audience is required: the client is registered for several")
	}
	registered := false
	for _, a := range c.Audiences {
		registered = registered || a == aud
	}
	if !registered {
		return tokenResponse{}, oauthErr("invalid_target", "audience is not registered for this client")
	}
	req := Request{Audience: aud, Scope: form.Get("scope")}
	resp := tokenResponse{Scope: req.Scope}
	switch gt {
	case GrantClientCredentials:
		req.Subject = c.ID
	case GrantTokenExchange:
		sub, err := h.exchangeSubject(ctx, form)
		if err != nil {
			return tokenResponse{}, err
		}
		req.Subject, req.SessionID = sub.subject, sub.sid
		resp.IssuedTokenType = TokenTypeAccessToken
	}
	cnf, err := h.binding(ctx, r, c)
	if err != nil {
		return tokenResponse{}, err
	}
	out, err := h.Auth.issue(ctx, c, req, cnf)
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) && ae.Code == "access_denied" {
			return tokenResponse{}, oauthErr("invalid_grant", "%s", ae.Description)
		}
		return tokenResponse{}, err
	}
	resp.AccessToken, resp.TokenType, resp.ExpiresIn = out.AccessToken, out.TokenType, out.ExpiresIn
	return resp, nil
}

// exchangeSubject checks a token exchange request (RFC 8693 section 2.1)
// and returns the subject of its subject token, which is used only once.
func (h *Handler) exchangeSubject(ctx context.Context, form url.Values) (externalSubject, error) {
	switch form.Get("subject_token_type") {
	case TokenTypeIDToken, TokenTypeJWT:
	case "":
		return externalSubject{}, oauthErr("invalid_request", "subject_token_type is required")
	default:
		return externalSubject{}, oauthErr("invalid_request", "subject_token_type %q is not supported", form.Get("subject_token_type"))
	}
	if form.Get("subject_token") == "" {
		return externalSubject{}, oauthErr("invalid_request", "subject_token is required")
	}
	if form.Has("actor_token") || form.Has("actor_token_type") {
		return externalSubject{}, oauthErr("invalid_request", "delegation (actor_token) is not supported")
	}
	if rt := form.Get("requested_token_type"); rt != "" && rt != TokenTypeAccessToken {
		return externalSubject{}, oauthErr("invalid_request", "requested_token_type %q is not supported", rt)
	}
	sub, err := h.Auth.externalSubject(ctx, form.Get("subject_token"))
	if err != nil {
		return externalSubject{}, err
	}
	first, err := h.Creds.seen.first(ctx, "exchange\x00"+sub.issuer, sub.once, sub.until)
	if err != nil {
		return externalSubject{}, err
	}
	if !first {
		return externalSubject{}, oauthErr("invalid_request", "the subject token was already exchanged")
	}
	return sub, nil
}

// binding checks the DPoP proof of a token request (RFC 9449 section 5)
// and returns the key thumbprint the token is to be bound to: htm POST,
// htu this token endpoint, iat within the window, no ath, a jti never seen
// at any replica, a nonce when the handler hands them out. No proof: a
// bearer token, unless the client must bind its tokens.
func (h *Handler) binding(ctx context.Context, r *http.Request, c *Client) (token.Confirmation, error) {
	proofs := r.Header.Values("DPoP")
	switch {
	case len(proofs) == 0 && c.RequireDPoP:
		return token.Confirmation{}, oauthErr("invalid_dpop_proof", "this client must present a DPoP proof")
	case len(proofs) == 0:
		return token.Confirmation{}, nil
	case len(proofs) > 1:
		return token.Confirmation{}, oauthErr("invalid_dpop_proof", "more than one DPoP header")
	}
	now := h.Auth.now()
	e := dpop.Expect{Method: http.MethodPost, URL: h.Auth.TokenEndpoint(), Now: now}
	if h.Nonces != nil {
		e.Nonce = func(n string) bool { return h.Nonces.Valid(n, now) }
	}
	p, err := dpop.Verify(proofs[0], e)
	if errors.Is(err, dpop.ErrUseNonce) {
		return token.Confirmation{}, oauthErr("use_dpop_nonce", "the DPoP proof must carry the nonce in the DPoP-Nonce header")
	}
	if err != nil {
		return token.Confirmation{}, oauthErr("invalid_dpop_proof", "%v", err)
	}
	first, err := h.Creds.seen.first(ctx, "dpop", dpop.ReplayKey(p), dpop.ReplayUntil(p, 0))
	if err != nil {
		return token.Confirmation{}, err
	}
	if !first {
		return token.Confirmation{}, oauthErr("invalid_dpop_proof", "DPoP proof already used")
	}
	return token.Confirmation{JKT: p.JKT}, nil
}

// writeOAuthErr writes err as RFC 6749 section 5.2 says: 401 for
// invalid_client (with a Basic challenge when the client tried Basic), 400
// for the other codes; a store or ledger that did not answer is 503.
func (h *Handler) writeOAuthErr(w http.ResponseWriter, r *http.Request, err error) {
	var ae *Error
	if !errors.As(err, &ae) {
		if errors.Is(err, context.Canceled) {
			return
		}
		if h.Log != nil {
			h.Log.Error("token request failed", "err", err)
		}
		wire.WriteError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the token could not be issued")
		return
	}
	status := http.StatusBadRequest
	if ae.Code == "invalid_client" {
		status = http.StatusUnauthorized
		if r.Header.Get("Authorization") != "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="custos", charset="UTF-8"`)
		}
	}
	if ae.Code == "use_dpop_nonce" && h.Nonces != nil {
		w.Header().Set("DPoP-Nonce", h.Nonces.Issue(h.Auth.now()))
	}
	w.Header().Set("Pragma", "no-cache")
	wire.WriteError(w, status, ae.Code, ae.Description)
}

// clockSkew is the skew allowed on the times of a client assertion.
const clockSkew = 30 * time.Second
