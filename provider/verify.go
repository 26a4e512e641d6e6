package provider

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/jwks"
	"github.com/custos-dev/custos/token"
	"github.com/custos-dev/custos/verdict"
	"github.com/custos-dev/custos/wire"
)

// algs are the JWS algorithms accepted from providers; HS* and none never.
var algs = []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256, jose.RS256}

// maxTokenBytes bounds a provider token.
const maxTokenBytes = 16 << 10

// Set is the configured providers, by issuer and by name, each with its key
// set. It is a verdict.Providers. Safe for concurrent use.
type Set struct {
	list     []*provider
	byIssuer map[string]*provider
	byName   map[string]*provider
}

type provider struct {
	Config
	keys *jwks.Remote
}

// NewSet validates list and returns the set; client fetches the key sets
// (nil: a client with a 5 s timeout), now is the clock of their cache.
func NewSet(list []Config, client *http.Client, now func() time.Time) (*Set, error) {
	list = slices.Clone(list)
	if err := Validate(list); err != nil {
		return nil, err
	}
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	if now == nil {
		now = time.Now
	}
	s := &Set{byIssuer: map[string]*provider{}, byName: map[string]*provider{}}
	for _, c := range list {
		p := &provider{Config: c, keys: &jwks.Remote{URL: c.JWKSURL, Client: client, Now: now, Parse: parseKeys}}
		s.list = append(s.list, p)
		s.byIssuer[c.Issuer] = p
		s.byName[c.Name] = p
	}
	return s, nil
}

// Len is the number of providers.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.list)
}

// Named returns the provider called name.
func (s *Set) Named(name string) (*Config, bool) {
	if s == nil {
		return nil, false
	}
	p, ok := s.byName[name]
	if !ok {
		return nil, false
	}
	return &p.Config, true
}

// claims are the members of a provider token custos reads.
type claims struct {
	Sub      *string         `json:"sub"`
	Aud      Audience        `json:"aud"`
	JTI      string          `json:"jti"`
	ClientID string          `json:"client_id"`
	AZP      string          `json:"azp"`
	Scope    json.RawMessage `json:"scope"`
	SCP      []string        `json:"scp"`
	SID      string          `json:"sid"`
	PRV      *string         `json:"custos_prv"`
	Ext      *struct {
		PRV *string `json:"custos_prv"`
	} `json:"ext"`
	Cnf *json.RawMessage `json:"cnf"`
}

// Verify implements verdict.Providers.
func (s *Set) Verify(ctx context.Context, raw string, now time.Time) (verdict.ProviderToken, bool) {
	if s == nil || len(s.list) == 0 {
		return verdict.ProviderToken{}, false
	}
	p := s.byIssuer[peekIssuer(raw)]
	if p == nil {
		return verdict.ProviderToken{}, false
	}
	return p.verify(ctx, raw), true
}

// payloadOf decodes the payload of a compact JWS.
func payloadOf(raw string) ([]byte, error) {
	_, rest, ok := strings.Cut(raw, ".")
	if !ok {
		return nil, errors.New("not a compact JWS")
	}
	pl, _, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, errors.New("not a compact JWS")
	}
	return base64.RawURLEncoding.DecodeString(pl)
}

// peekIssuer reads the iss of an unverified compact JWS, or "".
func peekIssuer(raw string) string {
	if len(raw) > maxTokenBytes {
		return ""
	}
	b, err := payloadOf(raw)
	if err != nil {
		return ""
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	return c.Iss
}

var errNoKey = errors.New("no key of the provider's set matches the token")

func (p *provider) verify(ctx context.Context, raw string) verdict.ProviderToken {
	malformed := verdict.ProviderToken{Reason: event.ReasonMalformed}
	if len(raw) > maxTokenBytes {
		return malformed
	}
	tok, err := jwt.ParseSigned(raw, algs)
	if err != nil || len(tok.Headers) != 1 {
		return malformed
	}
	h := tok.Headers[0]
	if h.JSONWebKey != nil || h.ExtraHeaders["jku"] != nil || h.ExtraHeaders["x5u"] != nil {
		return malformed // keys named by the token itself are never used
	}
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != "" {
		switch strings.ToLower(typ) {
		case "jwt", "at+jwt", "application/jwt", "application/at+jwt":
		default:
			return malformed
		}
	}
	// No member twice in any letter case, at any depth: encoding/json
	// would silently take one, and no two readers may disagree.
	if pl, err := payloadOf(raw); err != nil || wire.CheckKeys(pl) != nil {
		return malformed
	}
	var std jwt.Claims
	var cl claims
	if err := tok.UnsafeClaimsWithoutVerification(&std, &cl); err != nil {
		return malformed
	}
	out, ok := p.read(&std, &cl)
	if !ok {
		return malformed
	}
	out.KID, out.ClockSkew = h.KeyID, p.ClockSkew
	k, sigs, err := p.check(ctx, tok, h)
	out.Signatures = sigs
	switch {
	case errors.Is(err, errNoKey):
		out.Reason = event.ReasonUnknownKey
	case err != nil:
		out.Reason = event.ReasonBadSignature
	default:
		out.Key = &verdict.ProviderKey{Issuer: p.Issuer, KID: h.KeyID, Alg: h.Algorithm, Public: k.Key}
	}
	return out
}

// Holds implements verdict.Providers: k's provider is still configured
// and the key set it publishes, as this process holds it now, still has k
// under the same kid, for the same algorithm, and still picks it alone
// when the token named no kid. It never fetches for a key it lacks.
func (s *Set) Holds(ctx context.Context, k *verdict.ProviderKey) bool {
	if s == nil || k == nil {
		return false
	}
	p := s.byIssuer[k.Issuer]
	if p == nil {
		return false
	}
	set, err := p.keys.KeySet(ctx, false)
	if err != nil {
		return false
	}
	n, held := 0, false
	for i := range set.Keys {
		c := &set.Keys[i]
		if !usable(c, k.KID, k.Alg) {
			continue
		}
		n++
		if samePublic(c.Key, k.Public) {
			held = true
		}
	}
	return held && (k.KID != "" || n == 1)
}

// samePublic compares two public keys of the types a provider's set
// keeps, without the allocations of their Equal methods (public values:
// no need for constant time).
func samePublic(a any, b crypto.PublicKey) bool {
	switch x := a.(type) {
	case ed25519.PublicKey:
		y, ok := b.(ed25519.PublicKey)
		return ok && bytes.Equal(x, y)
	case *ecdsa.PublicKey:
		y, ok := b.(*ecdsa.PublicKey)
		return ok && x.Curve == y.Curve && x.X.Cmp(y.X) == 0 && x.Y.Cmp(y.Y) == 0
	case *rsa.PublicKey:
		y, ok := b.(*rsa.PublicKey)
		return ok && x.E == y.E && x.N.Cmp(y.N) == 0
	}
	return false
}

// usable reports whether a token naming kid (or none) and alg may verify
// under k.
func usable(k *jose.JSONWebKey, kid, alg string) bool {
	return (kid == "" || k.KeyID == kid) && (k.Algorithm == "" || k.Algorithm == alg)
}

// candidates are the keys of set a token naming kid (or none) and alg may
// verify under.
func candidates(set *jose.JSONWebKeySet, kid, alg string) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, k := range set.Keys {
		if usable(&k, kid, alg) {
			out = append(out, k)
		}
	}
	return out
}

// check verifies tok's signature with the key its header names (by kid;
// without one, the set must hold exactly one key of the token's alg). It
// returns the key that verified and how many signatures it checked.
func (p *provider) check(ctx context.Context, tok *jwt.JSONWebToken, h jose.Header) (jose.JSONWebKey, int, error) {
	for _, refresh := range []bool{false, true} {
		set, err := p.keys.KeySet(ctx, refresh)
		if err != nil {
			return jose.JSONWebKey{}, 0, fmt.Errorf("%w: %v", errNoKey, err)
		}
		named := false
		for _, k := range set.Keys {
			if h.KeyID == "" || k.KeyID == h.KeyID {
				named = true
			}
		}
		cands := candidates(set, h.KeyID, h.Algorithm)
		if named && h.KeyID != "" && len(cands) == 0 {
			return jose.JSONWebKey{}, 0, errors.New("the key the token names is for another algorithm")
		}
		if len(cands) == 0 || (h.KeyID == "" && len(cands) != 1) {
			continue
		}
		for i, k := range cands {
			var dummy map[string]any
			if tok.Claims(k.Key, &dummy) == nil {
				return k, i + 1, nil
			}
		}
		return jose.JSONWebKey{}, len(cands), errors.New("signature does not verify")
	}
	return jose.JSONWebKey{}, 0, errNoKey
}

// read maps a provider token's claims to custos's and computes its binding
// key; ok false when a member custos needs is missing or of the wrong shape.
func (p *provider) read(std *jwt.Claims, cl *claims) (verdict.ProviderToken, bool) {
	var out verdict.ProviderToken
	if std.Issuer != p.Issuer || cl.Sub == nil || *cl.Sub == "" || std.Expiry == nil {
		return out, false
	}
	client := cl.ClientID
	if client == "" {
		client = cl.AZP
	}
	if client == "" {
		return out, false
	}
	prv := ""
	if cl.PRV != nil {
		prv = *cl.PRV
	}
	if cl.Ext != nil && cl.Ext.PRV != nil {
		if prv != "" && prv != *cl.Ext.PRV {
			return out, false // two different ids: refuse rather than pick one
		}
		prv = *cl.Ext.PRV
	}
	kind, id := idJTI, cl.JTI
	if prv != "" {
		kind, id = idPRV, prv
	}
	c := &token.Claims{Issuer: p.Issuer, Subject: *cl.Sub, ExpiresAt: int64(*std.Expiry),
		JTI: cl.JTI, ClientID: client, SessionID: cl.SID}
	if std.IssuedAt != nil {
		c.IssuedAt = int64(*std.IssuedAt)
	}
	if std.NotBefore != nil {
		c.NotBefore = int64(*std.NotBefore)
	}
	if len(cl.Scope) > 0 {
		if json.Unmarshal(cl.Scope, &c.Scope) != nil {
			var list []string
			if json.Unmarshal(cl.Scope, &list) != nil {
				return out, false
			}
			c.Scope = strings.Join(list, " ")
		}
	} else if len(cl.SCP) > 0 {
		c.Scope = strings.Join(cl.SCP, " ")
	}
	if cl.Cnf != nil {
		// Only a DPoP binding is understood; any other confirmation
		// names a binding custos could not enforce.
		var cnf map[string]json.RawMessage
		if json.Unmarshal(*cl.Cnf, &cnf) != nil || len(cnf) != 1 || cnf["jkt"] == nil ||
			json.Unmarshal(cnf["jkt"], &c.Cnf.JKT) != nil || len(c.Cnf.JKT) != 43 {
			return out, false
		}
	}
	out.AudienceOK = slices.Contains(cl.Aud, p.Audience)
	if out.AudienceOK {
		c.Audience = p.Audience
	}
	bound := cl.Aud
	if !p.BindsAudience() {
		bound = nil
	}
	out.Binding = BindingKey(p.Issuer, kind, id, *cl.Sub, client, bound)
	out.Claims = c
	return out, true
}
