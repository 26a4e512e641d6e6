package authority

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

// idp is an identity provider: it publishes a key set and signs ID tokens.
type idp struct {
	srv     *httptest.Server
	keys    []jose.JSONWebKey // private
	fetches int
}

func newIDP(t *testing.T) *idp {
	t.Helper()
	p := &idp{}
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	p.keys = []jose.JSONWebKey{{Key: rk, KeyID: "rsa-1", Algorithm: "RS256", Use: "sig"}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches++
		set := jose.JSONWebKeySet{}
		for _, k := range p.keys {
			set.Keys = append(set.Keys, k.Public())
		}
		json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// sign makes a compact JWT of claims with key k (alg from the key).
func signJWT(t testing.TB, k jose.JSONWebKey, typ string, claims any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithHeader("kid", k.KeyID)
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.Algorithm), Key: k.Key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

const idpAudience = "shop-login"

// newOAuthFixture is newFixture with an identity provider configured for
// the token exchange.
func newOAuthFixture(t *testing.T) (*fixture, *idp) {
	t.Helper()
	p := newIDP(t)
	f := newFixture(t)
	var err error
	f.auth, err = New(Config{Issuer: "https://custos.test", MaxTTL: 15 * time.Minute, Decoys: []string{"999999"},
		ExternalIssuers: []ExternalIssuer{{Issuer: "https://login.shop.test", JWKSURL: p.srv.URL, Audience: idpAudience}}},
		f.sig, f.led, f.alerts, nil, func() time.Time { return f.now })
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	(&Handler{Auth: f.auth, Creds: f.creds}).Register(mux)
	f.srv.Config.Handler = mux
	return f, p
}

// post sends a token request and decodes the answer.
func (f *fixture) post(t *testing.T, form url.Values, set func(*http.Request)) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", f.srv.URL+TokenPath, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if set != nil {
		set(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("answer %q is not JSON: %v", b, err)
	}
	return resp.StatusCode, resp.Header, out
}

func (f *fixture) ledgerSize() int {
	f.led.mu.Lock()
	defer f.led.mu.Unlock()
	return len(f.led.m)
}

// checkToken parses an issued access token and checks it is in the ledger.
func (f *fixture) checkToken(t *testing.T, raw string) token.Claims {
	t.Helper()
	p, err := token.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := token.VerifySignature(p, f.sig.key.Alg, f.sig.key.Public); err != nil {
		t.Fatal(err)
	}
	if _, err := f.led.Get(context.Background(), ledger.HashToken(raw)); err != nil {
		t.Fatalf("issued token not in the ledger: %v", err)
	}
	return p.Claims
}

// The well-kept client library gets a token by client_secret_basic and by
// client_secret_post; the token is a custos token for the client itself,
// recorded in the ledger, and the answer is never cached.
func TestOAuthClientCredentialsInterop(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name  string
		style oauth2.AuthStyle
	}{{"ok/basic", oauth2.AuthStyleInHeader}, {"ok/post", oauth2.AuthStyleInParams}} {
		t.Run(tc.name, func(t *testing.T) {
			cc := clientcredentials.Config{ClientID: f.client.ID, ClientSecret: f.secret, TokenURL: f.srv.URL + TokenPath,
				Scopes: []string{"orders", "profile"}, AuthStyle: tc.style}
			tok, err := cc.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if tok.TokenType != "Bearer" || tok.Expiry.IsZero() {
				t.Errorf("token type %q expiry %v", tok.TokenType, tok.Expiry)
			}
			c := f.checkToken(t, tok.AccessToken)
			if c.Subject != f.client.ID || c.ClientID != f.client.ID || c.Audience != "shop-api" || c.Scope != "orders profile" || c.Cnf.JKT != "" {
				t.Errorf("claims %+v", c)
			}
		})
	}
	st, h, _ := f.post(t, url.Values{"grant_type": {"client_credentials"}, "client_id": {f.client.ID}, "client_secret": {f.secret}}, nil)
	if st != 200 || h.Get("Cache-Control") != "no-store" || h.Get("Pragma") != "no-cache" || h.Get("Content-Type") != "application/json" {
		t.Errorf("status %d headers %v", st, h)
	}
}

// Client secrets: the id and the secret must belong together, whatever the
// method, encoding or letter case; one method per request.
func TestOAuthClientSecretRefusals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other, otherSecret, err := f.creds.AddClient(ctx, "other", []string{"shop-api"}, "bob")
	if err != nil {
		t.Fatal(err)
	}
	keyed, keyedSecret, _ := f.creds.AddClient(ctx, "keyed", []string{"shop-api"}, "bob")
	_, pk, _ := ed25519.GenerateKey(rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pk.Public(), KeyID: "c1"}}})
	if err := f.creds.SetClientAuth(ctx, keyed.ID, ClientAuth{JWKS: jwks}); err != nil {
		t.Fatal(err)
	}
	revoked, revokedSecret, _ := f.creds.AddClient(ctx, "gone", []string{"shop-api"}, "bob")
	f.creds.RevokeClientSecret(ctx, revoked.ID, "t", "t")
	basic := func(id, secret string) func(*http.Request) {
		return func(r *http.Request) {
			r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(id+":"+secret)))
		}
	}
	cc := url.Values{"grant_type": {"client_credentials"}}
	with := func(kv ...string) url.Values {
		v := url.Values{"grant_type": {"client_credentials"}}
		for i := 0; i < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return v
	}
	for _, tc := range []struct {
		name   string
		form   url.Values
		set    func(*http.Request)
		status int
		code   string
	}{
		{"fail/basic-secret-of-other-client", cc, basic(f.client.ID, otherSecret), 401, "invalid_client"},
		{"fail/basic-id-of-other-client", cc, basic(other.ID, f.secret), 401, "invalid_client"},
		{"fail/basic-empty-id", cc, basic("", f.secret), 401, "invalid_client"},
		{"fail/basic-name-not-id", cc, basic("login", f.secret), 401, "invalid_client"},
		{"fail/basic-id-upper", cc, basic(strings.ToUpper(f.client.ID), f.secret), 401, "invalid_client"},
		{"fail/basic-secret-upper", cc, basic(f.client.ID, strings.ToUpper(f.secret)), 401, "invalid_client"},
		{"fail/basic-secret-prefix", cc, basic(f.client.ID, f.secret[:len(f.secret)-1]), 401, "invalid_client"},
		{"fail/basic-bad-escape", cc, basic(f.client.ID, f.secret+"%zz"), 401, "invalid_client"},
		{"fail/basic-not-base64", cc, func(r *http.Request) { r.Header.Set("Authorization", "Basic !!!") }, 401, "invalid_client"},
		{"fail/bearer-secret", cc, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+f.secret) }, 401, "invalid_client"},
		{"fail/two-authorization-headers", cc, func(r *http.Request) {
			basic(f.client.ID, f.secret)(r)
			r.Header.Add("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(other.ID+":"+otherSecret)))
		}, 400, "invalid_request"},
		{"fail/basic-and-post", with("client_id", f.client.ID, "client_secret", f.secret), basic(f.client.ID, f.secret), 400, "invalid_request"},
		{"fail/basic-body-id-differs", with("client_id", other.ID), basic(f.client.ID, f.secret), 400, "invalid_request"},
		{"fail/post-secret-of-other-client", with("client_id", f.client.ID, "client_secret", otherSecret), nil, 401, "invalid_client"},
		{"fail/post-no-id", with("client_secret", f.secret), nil, 401, "invalid_client"},
		{"fail/post-id-only", with("client_id", f.client.ID), nil, 401, "invalid_client"},
		{"fail/none", cc, nil, 401, "invalid_client"},
		{"fail/revoked", cc, basic(revoked.ID, revokedSecret), 401, "invalid_client"},
		{"fail/keyed-client-by-secret", cc, basic(keyed.ID, keyedSecret), 401, "invalid_client"},
		{"fail/post-and-assertion", with("client_id", f.client.ID, "client_secret", f.secret, "client_assertion_type", AssertionTypeJWTBearer, "client_assertion", "x.y.z"), nil, 400, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := f.ledgerSize()
			st, h, out := f.post(t, tc.form, tc.set)
			if st != tc.status || out["error"] != tc.code {
				t.Fatalf("status %d %v, want %d %s", st, out, tc.status, tc.code)
			}
			if out["access_token"] != nil || f.ledgerSize() != n {
				t.Fatal("a token was issued")
			}
			if st == 401 && tc.set != nil && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("401 to a client that tried Authorization without a Basic challenge: %v", h)
			}
		})
	}
	// The introspection endpoint's Basic authentication checks the pair too.
	tok, _ := f.auth.Issue(ctx, f.client, Request{Subject: "1001", Audience: "shop-api"})
	for name, set := range map[string]func(*http.Request){
		"fail/introspect-id-of-other-client": basic(other.ID, f.secret),
		"ok/introspect":                      basic(f.client.ID, f.secret),
	} {
		req, _ := http.NewRequest("POST", f.srv.URL+"/v1/tokens/introspect", strings.NewReader("token="+tok.AccessToken))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		set(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{true: 200, false: 401}[strings.HasPrefix(name, "ok/")]; resp.StatusCode != want {
			t.Errorf("%s: status %d, want %d", name, resp.StatusCode, want)
		}
	}
}

// The form is read strictly and the grant checked before anything is issued.
func TestOAuthRequestRefusals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	multi, multiSecret, _ := f.creds.AddClient(ctx, "multi", []string{"shop-api", "admin-api"}, "bob")
	auth := func(r *http.Request) { r.SetBasicAuth(f.client.ID, f.secret) }
	raw := func(body, ct string) func(*testing.T) (int, map[string]any) {
		return func(t *testing.T) (int, map[string]any) {
			req, _ := http.NewRequest("POST", f.srv.URL+TokenPath+"?grant_type=client_credentials", strings.NewReader(body))
			req.Header.Set("Content-Type", ct)
			auth(req)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var out map[string]any
			json.NewDecoder(resp.Body).Decode(&out)
			return resp.StatusCode, out
		}
	}
	form := func(v url.Values, set func(*http.Request)) func(*testing.T) (int, map[string]any) {
		return func(t *testing.T) (int, map[string]any) {
			st, _, out := f.post(t, v, set)
			return st, out
		}
	}
	for _, tc := range []struct {
		name   string
		do     func(*testing.T) (int, map[string]any)
		status int
		code   string
	}{
		{"fail/json-body", raw(`{"grant_type":"client_credentials"}`, "application/json"), 400, "invalid_request"},
		{"fail/no-content-type", raw("grant_type=client_credentials", ""), 400, "invalid_request"},
		{"fail/grant-only-in-query", raw("scope=x", "application/x-www-form-urlencoded"), 400, "invalid_request"},
		{"fail/grant-twice", raw("grant_type=client_credentials&grant_type=client_credentials", "application/x-www-form-urlencoded"), 400, "invalid_request"},
		{"fail/semicolon", raw("grant_type=client_credentials;scope=x", "application/x-www-form-urlencoded"), 400, "invalid_request"},
		{"fail/bad-escape", raw("grant_type=client%zzcredentials", "application/x-www-form-urlencoded"), 400, "invalid_request"},
		{"fail/not-utf8", raw("grant_type=client_credentials&scope=%ff", "application/x-www-form-urlencoded"), 400, "invalid_request"},
		{"fail/too-large", raw("grant_type=client_credentials&scope="+strings.Repeat("a", maxFormBytes), "application/x-www-form-urlencoded"), 400, "invalid_request"},
		{"fail/grant-case", form(url.Values{"grant_type": {"Client_Credentials"}}, auth), 400, "unsupported_grant_type"},
		{"fail/grant-password", form(url.Values{"grant_type": {"password"}, "username": {"a"}, "password": {"b"}}, auth), 400, "unsupported_grant_type"},
		{"fail/grant-empty", form(url.Values{"grant_type": {""}}, auth), 400, "invalid_request"},
		{"fail/resource", form(url.Values{"grant_type": {"client_credentials"}, "resource": {"https://api.shop.test"}}, auth), 400, "invalid_target"},
		{"fail/audience-not-registered", form(url.Values{"grant_type": {"client_credentials"}, "audience": {"admin-api"}}, auth), 400, "invalid_target"},
		{"fail/audience-ambiguous", form(url.Values{"grant_type": {"client_credentials"}}, func(r *http.Request) { r.SetBasicAuth(multi.ID, multiSecret) }), 400, "invalid_request"},
		{"fail/scope-control", form(url.Values{"grant_type": {"client_credentials"}, "scope": {"a\nb"}}, auth), 400, "invalid_request"},
		{"ok/ct-charset", raw("grant_type=client_credentials", "application/x-www-form-urlencoded; charset=UTF-8"), 200, ""},
		{"ok/audience-of-several", form(url.Values{"grant_type": {"client_credentials"}, "audience": {"admin-api"}}, func(r *http.Request) { r.SetBasicAuth(multi.ID, multiSecret) }), 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := f.ledgerSize()
			st, out := tc.do(t)
			if st != tc.status || (tc.code != "" && out["error"] != tc.code) {
				t.Fatalf("status %d %v, want %d %s", st, out, tc.status, tc.code)
			}
			if tc.status != 200 && (out["access_token"] != nil || f.ledgerSize() != n) {
				t.Fatal("a token was issued")
			}
		})
	}
}

// assertion builds a private_key_jwt assertion by RFC 7523's example:
// iss and sub the client_id, aud the token endpoint, a jti, exp in minutes.
func assertion(t *testing.T, k jose.JSONWebKey, clientID, aud string, now time.Time, edit func(m map[string]any)) string {
	m := map[string]any{"iss": clientID, "sub": clientID, "aud": aud, "jti": rand.Text(), "exp": now.Add(2 * time.Minute).Unix(), "iat": now.Unix()}
	if edit != nil {
		edit(m)
	}
	return signJWT(t, k, "", m)
}

func TestOAuthPrivateKeyJWT(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaPriv, _ := rsa.GenerateKey(rand.Reader, 2048)
	edKey := jose.JSONWebKey{Key: edPriv, KeyID: "ed-1", Algorithm: "EdDSA"}
	ecKey := jose.JSONWebKey{Key: ecPriv, KeyID: "ec-1", Algorithm: "ES256"}
	rsaKey := jose.JSONWebKey{Key: rsaPriv, KeyID: "rsa-1", Algorithm: "RS256"}
	_, strangerPriv, _ := ed25519.GenerateKey(rand.Reader)
	stranger := jose.JSONWebKey{Key: strangerPriv, KeyID: "ed-1", Algorithm: "EdDSA"}

	// One client with its keys registered, one that publishes them.
	reg, _, _ := f.creds.AddClient(ctx, "svc-registered", []string{"shop-api"}, "bob")
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{edKey.Public(), ecKey.Public()}})
	if err := f.creds.SetClientAuth(ctx, reg.ID, ClientAuth{JWKS: jwks}); err != nil {
		t.Fatal(err)
	}
	pub := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{rsaKey.Public(), ecKey.Public()}}
	ks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(pub) }))
	defer ks.Close()
	remote, _, _ := f.creds.AddClient(ctx, "svc-remote", []string{"shop-api"}, "bob")
	if err := f.creds.SetClientAuth(ctx, remote.ID, ClientAuth{JWKSURI: ks.URL + "/jwks"}); err != nil {
		t.Fatal(err)
	}
	ep := f.auth.TokenEndpoint()
	req := func(a string) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {AssertionTypeJWTBearer}, "client_assertion": {a}}
	}
	good := assertion(t, edKey, reg.ID, ep, f.now, nil)
	for _, tc := range []struct {
		name   string
		form   url.Values
		client string
	}{
		{"ok/eddsa-registered", req(good), reg.ID},
		{"ok/es256-registered-aud-issuer", req(assertion(t, ecKey, reg.ID, "https://custos.test", f.now, nil)), reg.ID},
		{"ok/rs256-jwks-uri", req(assertion(t, rsaKey, remote.ID, ep, f.now, nil)), remote.ID},
		{"ok/aud-array", req(assertion(t, ecKey, remote.ID, ep, f.now, func(m map[string]any) { m["aud"] = []string{"x", ep} })), remote.ID},
		{"ok/client-id-param", func() url.Values {
			v := req(assertion(t, edKey, reg.ID, ep, f.now, nil))
			v.Set("client_id", reg.ID)
			return v
		}(), reg.ID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _, out := f.post(t, tc.form, nil)
			if st != 200 {
				t.Fatalf("status %d %v", st, out)
			}
			if c := f.checkToken(t, out["access_token"].(string)); c.Subject != tc.client || c.ClientID != tc.client {
				t.Errorf("claims %+v", c)
			}
		})
	}
	// A second registry on the same store, as another replica sees it.
	f2 := *f
	f2.creds, _ = OpenCredentials(ctx, f.creds.db, func() time.Time { return f.now })
	mux := http.NewServeMux()
	(&Handler{Auth: f.auth, Creds: f2.creds}).Register(mux)
	f2.srv = httptest.NewServer(mux)
	defer f2.srv.Close()

	edit := func(k jose.JSONWebKey, id string, fn func(m map[string]any)) url.Values {
		return req(assertion(t, k, id, ep, f.now, fn))
	}
	hs := func() string {
		// HS256 keyed with the client's public key bytes: algorithm confusion.
		s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte(edPriv.Public().(ed25519.PublicKey))}, nil)
		raw, _ := jwt.Signed(s).Claims(map[string]any{"iss": reg.ID, "sub": reg.ID, "aud": ep, "jti": "j", "exp": f.now.Add(time.Minute).Unix()}).Serialize()
		return raw
	}()
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+reg.ID+`","sub":"`+reg.ID+`","aud":"`+ep+`","jti":"n","exp":`+jsonNum(f.now.Add(time.Minute).Unix())+`}`)) + "."
	embedded := func() string {
		opts := (&jose.SignerOptions{EmbedJWK: true})
		s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: strangerPriv}, opts)
		raw, _ := jwt.Signed(s).Claims(map[string]any{"iss": reg.ID, "sub": reg.ID, "aud": ep, "jti": "e", "exp": f.now.Add(time.Minute).Unix()}).Serialize()
		return raw
	}()
	for _, tc := range []struct {
		name string
		form url.Values
		srv  *httptest.Server
	}{
		{"fail/replayed", req(good), f.srv},
		{"fail/replayed-at-other-replica", req(good), f2.srv},
		{"fail/stranger-key-same-kid", edit(stranger, reg.ID, nil), f.srv},
		{"fail/unknown-kid", req(signJWT(t, jose.JSONWebKey{Key: strangerPriv, KeyID: "nope", Algorithm: "EdDSA"}, "", map[string]any{"iss": reg.ID, "sub": reg.ID, "aud": ep, "jti": "k", "exp": f.now.Add(time.Minute).Unix()})), f.srv},
		{"fail/key-of-other-client", edit(rsaKey, reg.ID, nil), f.srv},
		{"fail/hs256-confusion", req(hs), f.srv},
		{"fail/alg-none", req(none), f.srv},
		{"fail/embedded-jwk", req(embedded), f.srv},
		{"fail/iss-differs", edit(edKey, reg.ID, func(m map[string]any) { m["iss"] = remote.ID }), f.srv},
		{"fail/sub-differs", edit(edKey, reg.ID, func(m map[string]any) { m["sub"] = remote.ID }), f.srv},
		{"fail/aud-other", edit(edKey, reg.ID, func(m map[string]any) { m["aud"] = "https://other.test/oauth2/token" }), f.srv},
		{"fail/aud-case", edit(edKey, reg.ID, func(m map[string]any) { m["aud"] = strings.ToUpper(ep) }), f.srv},
		{"fail/aud-missing", edit(edKey, reg.ID, func(m map[string]any) { delete(m, "aud") }), f.srv},
		{"fail/exp-missing", edit(edKey, reg.ID, func(m map[string]any) { delete(m, "exp") }), f.srv},
		{"fail/expired", edit(edKey, reg.ID, func(m map[string]any) { m["exp"] = f.now.Add(-time.Minute).Unix() }), f.srv},
		{"fail/exp-too-far", edit(edKey, reg.ID, func(m map[string]any) { m["exp"] = f.now.Add(time.Hour).Unix() }), f.srv},
		{"fail/nbf-future", edit(edKey, reg.ID, func(m map[string]any) { m["nbf"] = f.now.Add(time.Hour).Unix() }), f.srv},
		{"fail/iat-future", edit(edKey, reg.ID, func(m map[string]any) { m["iat"] = f.now.Add(time.Hour).Unix() }), f.srv},
		{"fail/jti-missing", edit(edKey, reg.ID, func(m map[string]any) { delete(m, "jti") }), f.srv},
		{"fail/wrong-assertion-type", func() url.Values {
			v := edit(edKey, reg.ID, nil)
			v.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
			return v
		}(), f.srv},
		{"fail/client-id-param-differs", func() url.Values {
			v := edit(edKey, reg.ID, nil)
			v.Set("client_id", remote.ID)
			return v
		}(), f.srv},
		{"fail/secret-client", edit(edKey, f.client.ID, nil), f.srv},
		{"fail/garbage", req("a.b.c"), f.srv},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := f.ledgerSize()
			f.srv, tc.srv = tc.srv, f.srv
			st, _, out := f.post(t, tc.form, nil)
			f.srv = tc.srv
			if st != 401 || out["error"] != "invalid_client" {
				t.Fatalf("status %d %v", st, out)
			}
			if f.ledgerSize() != n {
				t.Fatal("a token was issued")
			}
		})
	}
}

func jsonNum(n int64) string { b, _ := json.Marshal(n); return string(b) }
