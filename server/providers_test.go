package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/server"
)

// shopIDP is an identity provider the shop keeps, made in the test: an
// Ed25519 and an RSA key, published as a JWKS by an httptest server.
type shopIDP struct {
	ed  ed25519.PrivateKey
	rs  *rsa.PrivateKey
	srv *httptest.Server
}

func newShopIDP(t *testing.T) *shopIDP {
	t.Helper()
	p := &shopIDP{}
	_, p.ed, _ = ed25519.GenerateKey(rand.Reader)
	p.rs, _ = rsa.GenerateKey(rand.Reader, 2048)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: p.ed.Public(), KeyID: "idp-ed", Algorithm: "EdDSA", Use: "sig"},
		{Key: p.rs.Public(), KeyID: "idp-rs", Algorithm: "RS256", Use: "sig"},
	}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *shopIDP) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: p.ed, KeyID: "idp-ed"}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (p *shopIDP) signRS(t *testing.T, claims map[string]any) string {
	t.Helper()
	s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: p.rs, KeyID: "idp-rs"}},
		(&jose.SignerOptions{}).WithType("JWT"))
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

const (
	hydraIss = "https://hydra.shop.test/"
	kcIss    = "https://kc.shop.test/realms/shop"
	auth0Iss = "https://shop.eu.auth0.test/"
)

// startWithProviders runs custos (gateway in-process) trusting three
// providers of one test key set: Hydra, Keycloak and Auth0.
func startWithProviders(t *testing.T) (*env, *shopIDP) {
	p := newShopIDP(t)
	e := startWith(t, func(c *config.Config) {
		c.Providers = []config.Provider{
			{Name: "shop-hydra", Issuer: hydraIss, JWKSURL: p.srv.URL, Audience: config.DefaultAudience, Kind: "hydra",
				AccessTokenLifespan: 10 * time.Minute, Clients: []string{"shop-web"}},
			{Name: "shop-kc", Issuer: kcIss, JWKSURL: p.srv.URL, Audience: config.DefaultAudience, Kind: "keycloak",
				AccessTokenLifespan: 5 * time.Minute},
			{Name: "shop-auth0", Issuer: auth0Iss, JWKSURL: p.srv.URL, Audience: config.DefaultAudience, Kind: "auth0"},
		}
	})
	return e, p
}

func addIssuer(t *testing.T, e *env, name, provider string) string {
	t.Helper()
	var out server.CredentialAnswer
	if err := e.API.Do(context.Background(), "POST", "/v1/credentials",
		map[string]string{"name": name, "role": "issuer", "provider": provider}, &out); err != nil {
		t.Fatalf("add issuer credential: %v", err)
	}
	if out.Role != authority.RoleIssuer || out.Provider != provider {
		t.Fatalf("credential %+v", out)
	}
	return out.Token
}

// fixture reads a provider fixture and fills its placeholders.
func fixture(t *testing.T, name string, vals map[string]string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/providers/" + name)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for k, v := range vals {
		s = strings.ReplaceAll(s, "{{"+k+"}}", v)
	}
	if strings.Contains(s, "{{") {
		t.Fatalf("fixture %s: placeholder left in %s", name, s)
	}
	return s
}

// Ory Hydra: the token hook records the token about to be issued and
// returns custos_prv among the echoed claims; the token Hydra then signs
// passes the gateway, and forgeries signed with Hydra's own key do not.
func TestHydraHookEndToEnd(t *testing.T) {
	e, idp := startWithProviders(t)
	cred := addIssuer(t, e, "hydra", "shop-hydra")
	m1, m2 := e.Member(1), e.Member(2)
	body := fixture(t, "hydra-token-hook.json", map[string]string{"ISS": hydraIss, "SUB": m1, "CLIENT": "shop-web"})
	before := time.Now()
	st, ans := raw(t, e, "POST", "/v1/providers/shop-hydra/hydra/token-hook", "Bearer "+cred, body)
	if st != 200 {
		t.Fatalf("hook: %d %v", st, ans)
	}
	sess, _ := ans["session"].(map[string]any)
	at, _ := sess["access_token"].(map[string]any)
	idt, _ := sess["id_token"].(map[string]any)
	prv, _ := at["custos_prv"].(string)
	if prv == "" || at["tenant"] != "kr" || idt["tier"] != "gold" {
		t.Fatalf("hook answer does not echo the session's claims with custos_prv: %v", ans)
	}
	// What Hydra signs: the extra claims under ext, aud the granted audience.
	exp := before.Add(10 * time.Minute).Unix()
	claims := func(change map[string]any) map[string]any {
		c := map[string]any{"iss": hydraIss, "sub": m1, "aud": []string{"shop-api"}, "client_id": "shop-web",
			"iat": before.Unix(), "exp": exp, "jti": "hydra-jti-1", "scp": []string{"openid", "offline"},
			"ext": map[string]any{"tenant": "kr", "roles": []string{"member"}, "custos_prv": prv}}
		for k, v := range change {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	seen := e.Upstream.Load()
	if st, reason := e.Get(t, idp.sign(t, claims(nil)), "/api/members/"+m1+"/profile"); st != 200 {
		t.Fatalf("recorded Hydra token: %d %q", st, reason)
	}
	if e.Upstream.Load() != seen+1 {
		t.Fatal("the upstream did not see the recorded token's request")
	}
	seen = e.Upstream.Load()
	for name, tc := range map[string]struct {
		tok, path string
		want      event.Reason
	}{
		"forged_no_prv":             {idp.sign(t, claims(map[string]any{"ext": map[string]any{"tenant": "kr"}})), "/api/members/" + m1 + "/profile", event.ReasonNotIssued},
		"forged_made_up_prv":        {idp.sign(t, claims(map[string]any{"ext": map[string]any{"custos_prv": "prv_madeupmadeupmadeup"}})), "/api/members/" + m1 + "/profile", event.ReasonNotIssued},
		"real_prv_other_sub":        {idp.sign(t, claims(map[string]any{"sub": m2})), "/api/members/" + m2 + "/profile", event.ReasonNotIssued},
		"real_prv_top_other_client": {idp.sign(t, claims(map[string]any{"custos_prv": prv, "ext": nil, "client_id": "evil"})), "/api/members/" + m1 + "/profile", event.ReasonNotIssued},
		"real_prv_later_exp":        {idp.sign(t, claims(map[string]any{"exp": exp + 3600})), "/api/members/" + m1 + "/profile", event.ReasonNotIssued},
		"real_prv_other_aud":        {idp.sign(t, claims(map[string]any{"aud": []string{"shop-api", "admin-api"}})), "/api/members/" + m1 + "/profile", event.ReasonNotIssued},
		"real_token_other_member":   {idp.sign(t, claims(nil)), "/api/members/" + m2 + "/profile", event.ReasonSubjectMismatch},
		"stranger_issuer":           {idp.sign(t, claims(map[string]any{"iss": "https://stranger.test/"})), "/api/members/" + m1 + "/profile", event.ReasonMalformed}, // checked as custos's own: typ JWT is not at+jwt
	} {
		t.Run(name, func(t *testing.T) {
			if st, reason := e.Get(t, tc.tok, tc.path); st != 401 || reason != string(tc.want) {
				t.Fatalf("got %d %q, want 401 %q", st, reason, tc.want)
			}
		})
	}
	if e.Upstream.Load() != seen {
		t.Fatal("the upstream saw a refused request")
	}

	// 403 (Hydra: access_denied) for a client the provider may not record
	// and for a subject custos refuses; nothing recorded.
	for name, b := range map[string]string{
		"unknown_client": fixture(t, "hydra-token-hook.json", map[string]string{"ISS": hydraIss, "SUB": m1, "CLIENT": "evil-app"}),
		"bad_subject":    fixture(t, "hydra-token-hook.json", map[string]string{"ISS": hydraIss, "SUB": "a b", "CLIENT": "shop-web"}),
	} {
		if st, ans := raw(t, e, "POST", "/v1/providers/shop-hydra/hydra/token-hook", "Bearer "+cred, b); st != 403 {
			t.Errorf("%s: %d %v, want 403", name, st, ans)
		}
	}
	// Not Hydra's shape: 400.
	if st, _ := raw(t, e, "POST", "/v1/providers/shop-hydra/hydra/token-hook", "Bearer "+cred, `{"session":{}}`); st != 400 {
		t.Errorf("body without request: %d, want 400", st)
	}
}

// The hook fails closed: a ledger that cannot record gets 503, which Hydra
// turns into server_error, so no unrecorded token is issued.
func TestHydraHookLedgerDown(t *testing.T) {
	e, _ := startWithProviders(t)
	cred := addIssuer(t, e, "hydra", "shop-hydra")
	e.S.Ledger.Close()
	body := fixture(t, "hydra-token-hook.json", map[string]string{"ISS": hydraIss, "SUB": e.Member(1), "CLIENT": "shop-web"})
	if st, ans := raw(t, e, "POST", "/v1/providers/shop-hydra/hydra/token-hook", "Bearer "+cred, body); st != 503 || ans["custos_prv"] != nil {
		t.Fatalf("ledger closed: %d %v, want 503", st, ans)
	}
}

// Keycloak: an issuing event in its EventRepresentation shape records the
// token by details.token_id; its token passes, one with another jti or a
// later exp does not; a non-issuing event records nothing.
func TestKeycloakEventEndToEnd(t *testing.T) {
	e, idp := startWithProviders(t)
	cred := addIssuer(t, e, "keycloak", "shop-kc")
	m1 := e.Member(1)
	now := time.Now()
	ev := fixture(t, "keycloak-event.json", map[string]string{"NOW_MS": strconv.FormatInt(now.UnixMilli(), 10),
		"CLIENT": "shop-web", "SUB": m1, "JTI": "onrtcc:1c9d0b6e-8f6f-4f36-9d0e-5b1f9a3c2e71"})
	if st, ans := raw(t, e, "POST", "/v1/providers/shop-kc/keycloak/event", "Bearer "+cred, ev); st != 201 {
		t.Fatalf("event: %d %v", st, ans)
	}
	if st, _ := raw(t, e, "POST", "/v1/providers/shop-kc/keycloak/event", "Bearer "+cred, ev); st != 200 {
		t.Fatalf("repeated event: %d, want 200", st)
	}
	// Keycloak's access token: typ JWT, client in azp, aud a list, RS256.
	claims := map[string]any{"iss": kcIss, "sub": m1, "aud": []string{"account", "shop-api"}, "azp": "shop-web",
		"typ": "Bearer", "iat": now.Unix(), "exp": now.Unix() + 300, "jti": "onrtcc:1c9d0b6e-8f6f-4f36-9d0e-5b1f9a3c2e71",
		"scope": "profile email"}
	if st, reason := e.Get(t, idp.signRS(t, claims), "/api/members/"+m1+"/profile"); st != 200 {
		t.Fatalf("recorded Keycloak token: %d %q", st, reason)
	}
	claims["jti"] = "onrtcc:00000000-0000-4000-8000-000000000000"
	if st, reason := e.Get(t, idp.signRS(t, claims), "/api/members/"+m1+"/profile"); reason != string(event.ReasonNotIssued) {
		t.Fatalf("unrecorded jti: %d %q", st, reason)
	}
	claims["jti"] = "onrtcc:1c9d0b6e-8f6f-4f36-9d0e-5b1f9a3c2e71"
	claims["exp"] = now.Unix() + 3600
	if st, reason := e.Get(t, idp.signRS(t, claims), "/api/members/"+m1+"/profile"); reason != string(event.ReasonNotIssued) {
		t.Fatalf("exp past the lifespan: %d %q", st, reason)
	}
	logout := strings.Replace(ev, `"CLIENT_LOGIN"`, `"LOGOUT"`, 1)
	logout = strings.Replace(logout, "onrtcc:1c9d", "onrtcc:ffff", 1)
	if st, _ := raw(t, e, "POST", "/v1/providers/shop-kc/keycloak/event", "Bearer "+cred, logout); st != 204 {
		t.Fatalf("non-issuing event: %d, want 204", st)
	}
	// The event's token is refused at a Hydra endpoint with this credential.
	if st, _ := raw(t, e, "POST", "/v1/providers/shop-hydra/hydra/token-hook", "Bearer "+cred, "{}"); st != 403 {
		t.Fatalf("keycloak credential on the hydra hook: %d, want 403", st)
	}
}

// Auth0: the Action's calls, a fresh prv then the record, strictly
// checked, idempotent, 409 on other fields.
func TestAuth0ActionEndToEnd(t *testing.T) {
	e, idp := startWithProviders(t)
	cred := addIssuer(t, e, "auth0", "shop-auth0")
	m1 := e.Member(1)
	st, ans := raw(t, e, "POST", "/v1/ledger/prv", "Bearer "+cred, nil)
	prv, _ := ans["prv"].(string)
	if st != 200 || len(prv) < 16 {
		t.Fatalf("prv: %d %v", st, ans)
	}
	exp := time.Now().Add(10 * time.Minute).Unix()
	vals := map[string]string{"ISS": auth0Iss, "PRV": prv, "SUB": m1, "CLIENT": "9ZjHk2qPq1", "EXP": strconv.FormatInt(exp, 10)}
	body := fixture(t, "auth0-action-record.json", vals)
	if st, ans := raw(t, e, "POST", "/v1/ledger/record", "Bearer "+cred, body); st != 201 {
		t.Fatalf("record: %d %v", st, ans)
	}
	if st, _ := raw(t, e, "POST", "/v1/ledger/record", "Bearer "+cred, body); st != 200 {
		t.Fatalf("repeat: %d, want 200", st)
	}
	other := strings.Replace(body, `"shop-api"`, `"shop-api", "admin-api"`, 1)
	if st, _ := raw(t, e, "POST", "/v1/ledger/record", "Bearer "+cred, other); st != 409 {
		t.Fatalf("same prv, other aud: %d, want 409", st)
	}
	for name, b := range map[string]string{
		"unknown_field": strings.Replace(body, `"iss"`, `"scope": "x", "iss"`, 1),
		"twice":         strings.Replace(body, `"iss"`, `"sub": "x", "iss"`, 1),
		"folded_twice":  strings.Replace(body, `"iss"`, `"SUB": "x", "iss"`, 1),
		"jti_and_prv":   strings.Replace(body, `"iss"`, `"jti": "abcdefgh1", "iss"`, 1),
		"trailing":      body + "{}",
		"not_json":      "iss=" + auth0Iss,
	} {
		if st, _ := raw(t, e, "POST", "/v1/ledger/record", "Bearer "+cred, b); st != 400 {
			t.Errorf("%s: %d, want 400", name, st)
		}
	}
	// Another provider's iss: 403.
	vals["ISS"], vals["PRV"] = hydraIss, "prv_0123456789abcdef"
	if st, _ := raw(t, e, "POST", "/v1/ledger/record", "Bearer "+cred, fixture(t, "auth0-action-record.json", vals)); st != 403 {
		t.Fatalf("record of another provider's iss: %d, want 403", st)
	}
	// The token Auth0 issues with the custom claim passes.
	tok := idp.sign(t, map[string]any{"iss": auth0Iss, "sub": m1, "aud": []string{"shop-api"}, "azp": "9ZjHk2qPq1",
		"iat": time.Now().Unix(), "exp": exp, "scope": "read:profile", "custos_prv": prv})
	if st, reason := e.Get(t, tok, "/api/members/"+m1+"/profile"); st != 200 {
		t.Fatalf("recorded Auth0 token: %d %q", st, reason)
	}
}

// An issuer credential may call only its own provider's record endpoints;
// other credentials may call none of them; revoking it cuts the provider off.
func TestIssuerCredentialScope(t *testing.T) {
	e, _ := startWithProviders(t)
	cred := addIssuer(t, e, "hydra", "shop-hydra")
	admin := adminToken(t, e)
	gw := addCred(t, e, "edge", authority.RoleGateway, "")
	hook := fixture(t, "hydra-token-hook.json", map[string]string{"ISS": hydraIss, "SUB": e.Member(1), "CLIENT": "shop-web"})
	// Elsewhere: 403.
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/keys"}, {"POST", "/v1/keys/rotate"}, {"GET", "/v1/credentials"}, {"POST", "/v1/credentials"},
		{"GET", "/v1/credentials/self"}, {"GET", "/v1/ledger/stream"}, {"POST", "/v1/ledger/lookup"},
		{"POST", "/v1/events"}, {"GET", "/v1/alerts"}, {"GET", "/v1/containment"},
	} {
		if st, _ := raw(t, e, c.method, c.path, "Bearer "+cred, "{}"); st != 403 {
			t.Errorf("issuer credential on %s %s: %d, want 403", c.method, c.path, st)
		}
	}
	// Another provider's endpoints: 403.
	if st, _ := raw(t, e, "POST", "/v1/providers/shop-kc/keycloak/event", "Bearer "+cred, "{}"); st != 403 {
		t.Errorf("hydra credential on keycloak events: %d, want 403", st)
	}
	// Other roles on the record endpoints: 403; none: 401.
	for _, tok := range []string{admin, gw.Token} {
		for _, path := range []string{"/v1/ledger/record", "/v1/ledger/prv", "/v1/providers/shop-hydra/hydra/token-hook"} {
			if st, _ := raw(t, e, "POST", path, "Bearer "+tok, hook); st != 403 {
				t.Errorf("%s with another role: %d, want 403", path, st)
			}
		}
	}
	if st, _ := raw(t, e, "POST", "/v1/ledger/prv", "", nil); st != 401 {
		t.Errorf("no credential: %d, want 401", st)
	}
	// An issuer credential for a provider that is not configured is not made.
	if st, _ := raw(t, e, "POST", "/v1/credentials", "Bearer "+admin, map[string]string{"name": "x", "role": "issuer", "provider": "nope"}); st != 400 {
		t.Errorf("issuer credential of an unknown provider: %d, want 400", st)
	}
	if st, _ := raw(t, e, "POST", "/v1/credentials", "Bearer "+admin, map[string]string{"name": "y", "role": "issuer"}); st != 400 {
		t.Errorf("issuer credential without provider: %d, want 400", st)
	}
	// Works, then revoked: cut off.
	if st, _ := raw(t, e, "POST", "/v1/providers/shop-hydra/hydra/token-hook", "Bearer "+cred, hook); st != 200 {
		t.Fatalf("hook before revocation: %d", st)
	}
	var list struct {
		Credentials []authority.Credential `json:"credentials"`
	}
	if err := e.API.Do(context.Background(), "GET", "/v1/credentials", nil, &list); err != nil {
		t.Fatal(err)
	}
	for _, c := range list.Credentials {
		if c.Role == authority.RoleIssuer {
			if st, _ := raw(t, e, "POST", "/v1/credentials/"+c.ID+"/revoke", "Bearer "+admin, nil); st != 200 {
				t.Fatalf("revoke: %d", st)
			}
		}
	}
	if st, _ := raw(t, e, "POST", "/v1/providers/shop-hydra/hydra/token-hook", "Bearer "+cred, hook); st != 401 {
		t.Fatalf("hook after revocation: %d, want 401", st)
	}
}

// Records reach detection's issuance detectors as issuances of client
// PROVIDER:client_id: a provider's client recording near-sequential member
// ids raises issuance_sequential; records without the provider's login
// session do not raise issuance_without_login.
func TestProviderRecordsReachDetection(t *testing.T) {
	e, _ := startWithProviders(t)
	cred := addIssuer(t, e, "auth0", "shop-auth0")
	exp := strconv.FormatInt(time.Now().Add(10*time.Minute).Unix(), 10)
	for i := range 60 {
		body := fixture(t, "auth0-action-record.json", map[string]string{"ISS": auth0Iss, "PRV": "prv_seq_" + strconv.Itoa(1000000+i),
			"SUB": strconv.Itoa(5000 + i), "CLIENT": "9ZjHk2qPq1", "EXP": exp})
		if st, ans := raw(t, e, "POST", "/v1/ledger/record", "Bearer "+cred, body); st != 201 {
			t.Fatalf("record %d: %d %v", i, st, ans)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !hasAlert(e, "issuance_sequential", "client:shop-auth0:9ZjHk2qPq1") {
		if time.Now().After(deadline) {
			t.Fatalf("no issuance_sequential alert for the provider's client; alerts: %+v", e.S.Detect.Alerts())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if hasAlert(e, "issuance_without_login", "client:shop-auth0:9ZjHk2qPq1") {
		t.Fatal("issuance_without_login raised for records that name no provider session")
	}
}
