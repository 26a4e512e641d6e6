package extauthz

import (
	"context"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/custos-dev/custos/dpop"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

// A key-bound token through Envoy's gRPC Check: the proof's htu is the URL
// from attributes.request.http (scheme, host, path); the denial carries the
// DPoP challenge.
func TestCheckDPoP(t *testing.T) {
	e := start(t)
	client := ed25519.NewKeyFromSeed([]byte("extauthz-dpop-client-0123456789a"))
	jkt, _ := dpop.Thumbprint(client.Public())
	now := time.Now()
	tok, err := token.Sign(e.priv, keys.EdDSA, "k1", token.Claims{Issuer: iss, Subject: "m-1", Audience: aud,
		IssuedAt: now.Unix() - 5, NotBefore: now.Unix() - 5, ExpiresAt: now.Unix() + 600, JTI: "bound", ClientID: "login",
		Cnf: token.Confirmation{JKT: jkt}})
	if err != nil {
		t.Fatal(err)
	}
	e.led.set(tok, ledger.Live)
	path := "/api/members/m-1/profile"
	req := func(scheme, proof string) *authv3.CheckRequest {
		h := map[string]string{"authorization": scheme + " " + tok}
		if proof != "" {
			h["dpop"] = proof
		}
		return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "shop.example", Path: path, Scheme: "https", Headers: h}}}}
	}
	n := 0
	proof := func(url string) string {
		n++
		p, err := dpop.Sign(client, dpop.NewClaims("envoy-"+string(rune('a'+n)), "GET", url, tok, "", time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	e.check(t, req("DPoP", proof("https://shop.example"+path)), "", "m-1")
	for name, tc := range map[string]struct {
		r    *authv3.CheckRequest
		want event.Reason
	}{
		"bearer":       {req("Bearer", ""), event.ReasonDPoPRequired},
		"http scheme":  {req("DPoP", proof("http://shop.example"+path)), event.ReasonBadDPoPProof},
		"other member": {req("DPoP", proof("https://shop.example/api/members/m-2/profile")), event.ReasonBadDPoPProof},
	} {
		resp, err := e.client.Check(context.Background(), tc.r)
		if err != nil {
			t.Fatal(err)
		}
		d := resp.GetDeniedResponse()
		reason, _ := headerOf(d.GetHeaders(), "x-custos-reason")
		challenge, _ := headerOf(d.GetHeaders(), "www-authenticate")
		if d == nil || reason != string(tc.want) || !strings.HasPrefix(challenge, "DPoP ") {
			t.Errorf("%s: %v, reason %q, challenge %q", name, resp.GetStatus(), reason, challenge)
		}
		if ev := e.ev.last(); ev.Reason != tc.want {
			t.Errorf("%s: event reason %q", name, ev.Reason)
		}
	}
}
