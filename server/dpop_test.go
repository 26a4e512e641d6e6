package server_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/dpop"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

// A token bound to a client key, through the running server: RFC 7662
// introspection says active with its cnf and token_type DPoP, and the
// in-process gateway serves it exactly when a fresh proof of that key comes
// with it; otherwise dpop_required or bad_dpop_proof, with a DPoP challenge.
func TestBoundTokenIntrospectionAndGateway(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	secret := e.Client(t)
	m := e.Member(4)
	path := "/api/members/" + m + "/profile"
	client := ed25519.NewKeyFromSeed([]byte("server-dpop-client-key-012345678"))
	thief := ed25519.NewKeyFromSeed([]byte("server-dpop-thief-key-0123456789"))
	jkt, _ := dpop.Thumbprint(client.Public())

	k, signer, err := e.S.Keys.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c := token.Claims{Issuer: e.Cfg.Issuer, Subject: m, Audience: config.DefaultAudience, IssuedAt: now.Unix(), NotBefore: now.Unix(),
		ExpiresAt: now.Add(5 * time.Minute).Unix(), JTI: "bound-1", ClientID: "login", Cnf: token.Confirmation{JKT: jkt}}
	bound, err := token.Sign(signer, k.Alg, k.KID, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.S.Ledger.Put(ctx, ledger.Entry{Hash: ledger.HashToken(bound), JTI: c.JTI, KID: k.KID, Subject: m,
		Audience: c.Audience, Client: "login", IssuedAt: now.UTC(), ExpiresAt: time.Unix(c.ExpiresAt, 0).UTC()}); err != nil {
		t.Fatal(err)
	}

	var in struct {
		Active    bool   `json:"active"`
		TokenType string `json:"token_type"`
		Cnf       *struct {
			JKT string `json:"jkt"`
		} `json:"cnf"`
	}
	if err := e.API.DoAuth(ctx, "POST", "/v1/tokens/introspect", secret, map[string]string{"token": bound}, &in); err != nil {
		t.Fatal(err)
	}
	if !in.Active || in.TokenType != "DPoP" || in.Cnf == nil || in.Cnf.JKT != jkt {
		t.Fatalf("introspection %+v", in)
	}

	n := 0
	proof := func(k ed25519.PrivateKey) string {
		n++
		p, err := dpop.Sign(k, dpop.NewClaims("srv-"+string(rune('a'+n)), "GET", e.GatewayURL+path, bound, "", time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	get := func(scheme, proof string) (int, string, string) {
		req, _ := http.NewRequest("GET", e.GatewayURL+path, nil)
		req.Header.Set("Authorization", scheme+" "+bound)
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var body struct {
			Desc string `json:"error_description"`
		}
		_ = json.Unmarshal(b, &body)
		return resp.StatusCode, body.Desc, resp.Header.Get("WWW-Authenticate")
	}
	p := proof(client)
	if st, reason, _ := get("DPoP", p); st != 200 {
		t.Fatalf("bound token with its proof: %d %s", st, reason)
	}
	for _, tc := range []struct {
		name, scheme, proof, want string
	}{
		{"replayed proof", "DPoP", p, "bad_dpop_proof"},
		{"Bearer scheme", "Bearer", proof(client), "dpop_required"},
		{"no proof", "DPoP", "", "dpop_required"},
		{"thief's proof", "DPoP", proof(thief), "bad_dpop_proof"},
	} {
		st, reason, challenge := get(tc.scheme, tc.proof)
		if st != 401 || reason != tc.want || !strings.HasPrefix(challenge, "DPoP ") {
			t.Errorf("%s: %d %q %q, want 401 %s with a DPoP challenge", tc.name, st, reason, challenge, tc.want)
		}
	}
}
