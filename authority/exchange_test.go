package authority

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/custos-dev/custos/jwks"
	"github.com/go-jose/go-jose/v4"
)

// idToken is an ID token as the shop's identity provider issues it
// (OpenID Connect Core section 2), for member sub.
func (p *idp) idToken(t *testing.T, now time.Time, sub string, edit func(m map[string]any)) string {
	m := map[string]any{"iss": "https://login.shop.test", "sub": sub, "aud": idpAudience, "exp": now.Add(5 * time.Minute).Unix(),
		"iat": now.Unix(), "jti": rand.Text(), "sid": "sess-" + sub, "auth_time": now.Unix()}
	if edit != nil {
		edit(m)
	}
	return signJWT(t, p.keys[0], "JWT", m)
}

// exchange is a token exchange request by RFC 8693 section 2.3's example.
func exchange(subjectToken string) url.Values {
	return url.Values{"grant_type": {GrantTokenExchange}, "subject_token": {subjectToken},
		"subject_token_type": {TokenTypeIDToken}, "requested_token_type": {TokenTypeAccessToken}}
}

func TestOAuthTokenExchange(t *testing.T) {
	f, p := newOAuthFixture(t)
	auth := func(r *http.Request) { r.SetBasicAuth(f.client.ID, f.secret) }
	st, _, out := f.post(t, exchange(p.idToken(t, f.now, "1001", nil)), auth)
	if st != 200 || out["issued_token_type"] != TokenTypeAccessToken || out["token_type"] != "Bearer" {
		t.Fatalf("status %d %v", st, out)
	}
	c := f.checkToken(t, out["access_token"].(string))
	if c.Subject != "1001" || c.ClientID != f.client.ID || c.Audience != "shop-api" || c.SessionID != "sess-1001" {
		t.Fatalf("claims %+v", c)
	}
	// subject_token_type jwt, and the provider rotating to a new key (an
	// unknown kid fetches the key set again).
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.keys = append([]jose.JSONWebKey{{Key: ec, KeyID: "ec-2", Algorithm: "ES256"}}, p.keys...)
	f.now = f.now.Add(jwks.MinRefresh)
	v := exchange(p.idToken(t, f.now, "1002", nil))
	v.Set("subject_token_type", TokenTypeJWT)
	if st, _, out := f.post(t, v, auth); st != 200 {
		t.Fatalf("after rotation: status %d %v", st, out)
	}

	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	forged := jose.JSONWebKey{Key: other, KeyID: "ec-2", Algorithm: "RS256"}
	reused := p.idToken(t, f.now, "1003", nil)
	if st, _, _ := f.post(t, exchange(reused), auth); st != 200 {
		t.Fatal("first use refused")
	}
	withKey := func(k jose.JSONWebKey, typ string, edit func(m map[string]any)) string {
		m := map[string]any{"iss": "https://login.shop.test", "sub": "1004", "aud": idpAudience, "exp": f.now.Add(5 * time.Minute).Unix(), "iat": f.now.Unix(), "jti": rand.Text()}
		if edit != nil {
			edit(m)
		}
		return signJWT(t, k, typ, m)
	}
	for _, tc := range []struct {
		name string
		form url.Values
		code string
	}{
		{"fail/replayed", exchange(reused), "invalid_request"},
		{"fail/replayed-no-jti", func() url.Values {
			tok := p.idToken(t, f.now, "1005", func(m map[string]any) { delete(m, "jti") })
			f.post(t, exchange(tok), auth)
			return exchange(tok)
		}(), "invalid_request"},
		{"fail/unconfigured-issuer", exchange(p.idToken(t, f.now, "1004", func(m map[string]any) { m["iss"] = "https://evil.test" })), "invalid_request"},
		{"fail/issuer-trailing-slash", exchange(p.idToken(t, f.now, "1004", func(m map[string]any) { m["iss"] = "https://login.shop.test/" })), "invalid_request"},
		{"fail/expired", exchange(p.idToken(t, f.now, "1004", func(m map[string]any) {
			m["iat"], m["exp"] = f.now.Add(-10*time.Minute).Unix(), f.now.Add(-time.Minute).Unix()
		})), "invalid_request"},
		{"fail/other-audience", exchange(p.idToken(t, f.now, "1004", func(m map[string]any) { m["aud"] = "other-app" })), "invalid_request"},
		{"fail/audience-array-without-ours", exchange(p.idToken(t, f.now, "1004", func(m map[string]any) { m["aud"] = []string{"a", "b"} })), "invalid_request"},
		{"fail/no-exp", exchange(p.idToken(t, f.now, "1004", func(m map[string]any) { delete(m, "exp") })), "invalid_request"},
		{"fail/no-iat", exchange(p.idToken(t, f.now, "1004", func(m map[string]any) { delete(m, "iat") })), "invalid_request"},
		{"fail/iat-future", exchange(p.idToken(t, f.now, "1004", func(m map[string]any) { m["iat"] = f.now.Add(time.Hour).Unix() })), "invalid_request"},
		{"fail/nbf-future", exchange(p.idToken(t, f.now, "1004", func(m map[string]any) { m["nbf"] = f.now.Add(time.Hour).Unix() })), "invalid_request"},
		{"fail/lifetime-over-a-day", exchange(p.idToken(t, f.now, "1004", func(m map[string]any) { m["exp"] = f.now.Add(48 * time.Hour).Unix() })), "invalid_request"},
		{"fail/subject-slash", exchange(p.idToken(t, f.now, "10/04", nil)), "invalid_request"},
		{"fail/subject-dotdot", exchange(p.idToken(t, f.now, "..", nil)), "invalid_request"},
		{"fail/subject-number", exchange(p.idToken(t, f.now, "x", func(m map[string]any) { m["sub"] = 1004 })), "invalid_request"},
		{"fail/forged-signature-same-kid", exchange(withKey(forged, "JWT", nil)), "invalid_request"},
		{"fail/access-token-typ", exchange(withKey(p.keys[1], "at+jwt", nil)), "invalid_request"},
		{"fail/not-a-jwt", exchange("not.a.jwt"), "invalid_request"},
		{"fail/subject-token-type-access-token", func() url.Values {
			v := exchange(p.idToken(t, f.now, "1004", nil))
			v.Set("subject_token_type", TokenTypeAccessToken)
			return v
		}(), "invalid_request"},
		{"fail/no-subject-token-type", func() url.Values {
			v := exchange(p.idToken(t, f.now, "1004", nil))
			v.Del("subject_token_type")
			return v
		}(), "invalid_request"},
		{"fail/actor-token", func() url.Values {
			v := exchange(p.idToken(t, f.now, "1004", nil))
			v.Set("actor_token", p.idToken(t, f.now, "1005", nil))
			v.Set("actor_token_type", TokenTypeIDToken)
			return v
		}(), "invalid_request"},
		{"fail/requested-refresh-token", func() url.Values {
			v := exchange(p.idToken(t, f.now, "1004", nil))
			v.Set("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token")
			return v
		}(), "invalid_request"},
		{"fail/decoy-subject", exchange(p.idToken(t, f.now, "999999", nil)), "invalid_grant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := f.ledgerSize()
			st, _, out := f.post(t, tc.form, auth)
			if st != 400 || out["error"] != tc.code {
				t.Fatalf("status %d %v, want 400 %s", st, out, tc.code)
			}
			if f.ledgerSize() != n {
				t.Fatal("a token was issued")
			}
		})
	}
	// An unauthenticated caller cannot exchange a good token.
	if st, _, out := f.post(t, exchange(p.idToken(t, f.now, "1006", nil)), nil); st != 401 || out["error"] != "invalid_client" {
		t.Fatalf("unauthenticated exchange: %d %v", st, out)
	}
	// Made-up kids do not make custos fetch the provider's keys each time.
	before := p.fetches
	for range 5 {
		f.post(t, exchange(withKey(jose.JSONWebKey{Key: other, KeyID: rand.Text(), Algorithm: "RS256"}, "", nil)), auth)
	}
	if p.fetches-before > 1 {
		t.Errorf("%d key set fetches for 5 unknown kids within %s", p.fetches-before, jwks.MinRefresh)
	}
}

func TestExternalIssuerConfig(t *testing.T) {
	good := ExternalIssuer{Issuer: "https://login.shop.test", JWKSURL: "https://login.shop.test/jwks", Audience: "a"}
	for _, tc := range []struct {
		name string
		edit func(*ExternalIssuer)
		ok   bool
	}{
		{"ok/defaults", func(*ExternalIssuer) {}, true},
		{"ok/loopback-http-jwks", func(e *ExternalIssuer) { e.JWKSURL = "http://127.0.0.1:9/jwks" }, true},
		{"fail/http-jwks", func(e *ExternalIssuer) { e.JWKSURL = "http://login.shop.test/jwks" }, false},
		{"fail/no-audience", func(e *ExternalIssuer) { e.Audience = "" }, false},
		{"fail/relative-issuer", func(e *ExternalIssuer) { e.Issuer = "login.shop.test" }, false},
		{"fail/hs256", func(e *ExternalIssuer) { e.Algorithms = []string{"HS256"} }, false},
		{"fail/none", func(e *ExternalIssuer) { e.Algorithms = []string{"none"} }, false},
		{"fail/skew", func(e *ExternalIssuer) { e.ClockSkew = time.Hour }, false},
	} {
		e := good
		tc.edit(&e)
		_, err := checkExternals([]ExternalIssuer{e})
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, err := checkExternals([]ExternalIssuer{good, good}); err == nil {
		t.Error("fail/twice: accepted")
	}
}
