package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/internal/proctest"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/server/servertest"
	"github.com/custos-dev/custos/token"
)

// Introspection (RFC 7662, over HTTP) and the in-process gateway give the
// same verdict on the same token at the same moment, for every token-level
// reason: introspection is active exactly when the gateway lets the token
// through, and the authority's verdict names the gateway's reason.
func TestIntrospectionAgreesWithGateway(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	secret := e.Client(t)
	m := e.Member(3)
	path := "/api/members/" + m + "/profile"
	k, signer, err := e.S.Keys.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	sign := func(s ed25519.PrivateKey, kid string, edit func(*token.Claims)) string {
		now := time.Now()
		c := token.Claims{Issuer: e.Cfg.Issuer, Subject: m, Audience: config.DefaultAudience,
			IssuedAt: now.Unix(), NotBefore: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix(), JTI: "agree", ClientID: "cl_x"}
		if edit != nil {
			edit(&c)
		}
		var raw string
		var err error
		if s == nil {
			raw, err = token.Sign(signer, k.Alg, kid, c)
		} else {
			raw, err = token.Sign(s, keys.EdDSA, kid, c)
		}
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	introspect := func(t *testing.T, tok string) bool {
		t.Helper()
		var in struct {
			Active *bool  `json:"active"`
			Sub    string `json:"sub"`
		}
		if err := e.API.DoAuth(ctx, "POST", "/v1/tokens/introspect", secret, map[string]string{"token": tok}, &in); err != nil || in.Active == nil {
			t.Fatalf("introspect: %v %+v", err, in)
		}
		if *in.Active && in.Sub != m {
			t.Errorf("active token introspects sub %q", in.Sub)
		}
		return *in.Active
	}
	rs := &authority.Client{Audiences: []string{config.DefaultAudience}}
	agree := func(t *testing.T, tok string, want event.Reason) {
		t.Helper()
		st, reason := e.Get(t, tok, path)
		if want == "" && st != 200 || want != "" && (st != 401 || reason != string(want)) {
			t.Fatalf("gateway: %d %q, want %q", st, reason, want)
		}
		if active := introspect(t, tok); active != (want == "") {
			t.Fatalf("introspection active=%v while the gateway says %d %q", active, st, reason)
		}
		if v := e.S.Authority.Verdict(ctx, rs, tok); v.Reason != want {
			t.Fatalf("authority verdict %q, gateway %q", v.Reason, want)
		}
	}

	issued := e.Issue(t, secret, m)
	revoked := e.Issue(t, secret, m)
	if err := e.API.DoAuth(ctx, "POST", "/v1/tokens/revoke", secret, map[string]string{"token": revoked}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tok  string
		want event.Reason
	}{
		{"ok/issued", issued, ""},
		{"fail/malformed", "a.b.c", event.ReasonMalformed},
		{"fail/malformed-alg-none", "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", event.ReasonMalformed},
		{"fail/unknown_key", sign(stranger, "nobody", nil), event.ReasonUnknownKey},
		{"fail/bad_signature", sign(stranger, k.KID, nil), event.ReasonBadSignature},
		{"fail/expired", sign(nil, k.KID, func(c *token.Claims) { c.ExpiresAt = time.Now().Add(-2 * time.Minute).Unix() }), event.ReasonExpired},
		{"fail/not_yet_valid", sign(nil, k.KID, func(c *token.Claims) { c.NotBefore = time.Now().Add(10 * time.Minute).Unix() }), event.ReasonNotYetValid},
		{"fail/wrong_issuer", sign(nil, k.KID, func(c *token.Claims) { c.Issuer = "https://evil.example" }), event.ReasonWrongIssuer},
		{"fail/wrong_audience", sign(nil, k.KID, func(c *token.Claims) { c.Audience = "billing-api" }), event.ReasonWrongAudience},
		{"fail/not_issued", e.Forge(t, m, "agree-forged"), event.ReasonNotIssued},
		{"fail/revoked_token", revoked, event.ReasonRevokedToken},
	} {
		t.Run(tc.name, func(t *testing.T) { agree(t, tc.tok, tc.want) })
	}

	// The case seen in the field: after keys revoke, introspection said
	// active while the gateway refused revoked_key.
	forged := e.Forge(t, m, "agree-forged-2")
	if err := e.API.Do(ctx, "POST", "/v1/keys/"+k.KID+"/revoke", map[string]string{"reason": "test"}, nil); err != nil {
		t.Fatal(err)
	}
	t.Run("fail/revoked_key", func(t *testing.T) { agree(t, issued, event.ReasonRevokedKey) })
	t.Run("fail/revoked_key-forged", func(t *testing.T) { agree(t, forged, event.ReasonRevokedKey) })
	t.Run("ok/new-key", func(t *testing.T) { agree(t, e.Issue(t, secret, m), "") })
}

// runGateway starts `custos gateway` (server.RunGateway) against e and
// returns its base URL and its log.
func runGateway(t *testing.T, e *env, edit func(*config.Config)) (string, *proctest.Output) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	gl := servertest.Listen(t)
	addr := gl.Addr().String()
	gl.Close()
	cfg := e.Cfg
	cfg.Gateway.Listen = addr
	cfg.Gateway.Authority = e.APIURL
	if edit != nil {
		edit(&cfg)
	}
	logs := &proctest.Output{}
	stopped := make(chan error, 1)
	go func() { stopped <- server.RunGateway(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil))) }()
	t.Cleanup(func() { cancel(); <-stopped })
	servertest.WaitListening(t, addr)
	return "http://" + addr, logs
}

// A standalone gateway agrees with introspection too, including after a
// key revocation reaches it, refuses unrouted paths as unknown_route, and
// one with no routes says loudly at start that it binds no subject.
func TestStandaloneGatewayAgreesWithIntrospection(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	secret := e.Client(t)
	gw, logs := runGateway(t, e, nil)
	m := e.Member(4)
	tok := e.Issue(t, secret, m)
	eventually := func(what string, f func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !f(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("never: %s", what)
			}
		}
	}
	eventually("issued token allowed", func() bool {
		st, _ := servertest.Get(t, gw, tok, "/api/members/"+m+"/profile")
		return st == 200
	})
	if strings.Contains(logs.String(), "WARNING") {
		t.Errorf("a gateway with routes warned: %s", logs)
	}
	for _, p := range []string{"/admin", "/api/members/" + m + "/profile/", "/API/members/" + m + "/profile", "/api/members/" + m + "%2Fprofile"} {
		if st, reason := servertest.Get(t, gw, tok, p); st != 401 || reason != string(event.ReasonUnknownRoute) {
			t.Errorf("%s: %d %q", p, st, reason)
		}
	}
	introspect := func() bool {
		var in struct {
			Active bool `json:"active"`
		}
		if err := e.API.DoAuth(ctx, "POST", "/v1/tokens/introspect", secret, map[string]string{"token": tok}, &in); err != nil {
			t.Fatal(err)
		}
		return in.Active
	}
	if !introspect() {
		t.Fatal("issued token introspects inactive")
	}
	k, _, _ := e.S.Keys.Signer(ctx)
	if err := e.API.Do(ctx, "POST", "/v1/keys/"+k.KID+"/revoke", map[string]string{"reason": "test"}, nil); err != nil {
		t.Fatal(err)
	}
	if introspect() {
		t.Fatal("introspection active after the key was revoked")
	}
	eventually("standalone gateway refuses revoked_key", func() bool {
		st, reason := servertest.Get(t, gw, tok, "/api/members/"+m+"/profile")
		return st == 401 && reason == string(event.ReasonRevokedKey)
	})

	_, bare := runGateway(t, e, func(c *config.Config) { c.Gateway.Routes = nil })
	eventually("no-routes warning", func() bool {
		return strings.Contains(bare.String(), "WARNING") && strings.Contains(bare.String(), "no routes")
	})
}

// `custos serve` with an in-process gateway and no routes warns at start.
func TestInProcessGatewayWarnsWithoutRoutes(t *testing.T) {
	for _, routes := range []bool{false, true} {
		logs := &proctest.Output{}
		cfg := config.Default()
		cfg.Data = t.TempDir() + "/data"
		cfg.Issuer = "http://127.0.0.1:1"
		cfg.Gateway.Upstream = "http://127.0.0.1:2"
		if routes {
			cfg.Gateway.Routes = []config.Route{{Pattern: "GET /api/members/{id}", SubjectParam: "id"}}
		}
		s, err := server.Open(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)), nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		warned := strings.Contains(logs.String(), "WARNING") && strings.Contains(logs.String(), "no routes")
		if warned == routes {
			t.Errorf("routes=%v: warned=%v\n%s", routes, warned, logs)
		}
	}
}
