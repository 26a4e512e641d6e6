package verdict_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/custos-dev/custos/dpop"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/token"
	"github.com/custos-dev/custos/verdict"
)

// gatewayDPoP runs raw through the gateway under scheme with the given proof.
func (w *world) gatewayDPoP(raw, scheme, proof string) event.Reason {
	req := httptest.NewRequest("GET", "http://api.shop.example/x", nil)
	req.Header.Set("Authorization", scheme+" "+raw)
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	rec := httptest.NewRecorder()
	w.gw.ServeHTTP(rec, req)
	if rec.Code == 200 {
		return ""
	}
	var body struct {
		Desc string `json:"error_description"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	return event.Reason(body.Desc)
}

// A token bound to a key: the token verdict is the same at the gateway and
// at introspection, which reports the binding (cnf, token_type DPoP) and is
// active exactly when the gateway lets the token through with a proof of
// that key; without the proof the gateway alone refuses, dpop_required or
// bad_dpop_proof, since only the request carries the proof.
func TestBoundTokenAgreement(t *testing.T) {
	client := ed25519.NewKeyFromSeed([]byte("agree-client-key-0123456789abcde"))
	thief := ed25519.NewKeyFromSeed([]byte("agree-thief-key-0123456789abcdef"))
	jkt, _ := dpop.Thumbprint(client.Public())
	n := 0
	proof := func(t *testing.T, k ed25519.PrivateKey, raw string) string {
		n++
		p, err := dpop.Sign(k, dpop.NewClaims("agree-"+string(rune('a'+n)), "GET", "http://api.shop.example/x", raw, "", t0))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	bind := func(c *token.Claims) { c.Cnf.JKT = jkt }
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		prep    func(*testing.T, *world) string
		verdict event.Reason // token verdict, the same at both
	}{
		{"issued", func(t *testing.T, w *world) string { r := w.sign(t, w.priv, "k1", bind); w.record(r); return r }, ""},
		{"not_issued", func(t *testing.T, w *world) string { return w.sign(t, w.priv, "k1", bind) }, event.ReasonNotIssued},
		{"expired", func(t *testing.T, w *world) string {
			r := w.sign(t, w.priv, "k1", func(c *token.Claims) { bind(c); c.ExpiresAt = t0.Unix() - 60 })
			w.record(r)
			return r
		}, event.ReasonExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			raw := tc.prep(t, w)
			in, err := w.auth.Introspect(ctx, w.rs, raw)
			if err != nil || in.Active != (tc.verdict == "") {
				t.Fatalf("introspection %+v %v", in, err)
			}
			if in.Active && (in.Cnf == nil || in.Cnf.JKT != jkt || in.TokenType != "DPoP") {
				t.Fatalf("introspection does not report the binding: %+v", in)
			}
			if v := w.auth.Verdict(ctx, w.rs, raw); v.Reason != tc.verdict {
				t.Fatalf("authority verdict %q, want %q", v.Reason, tc.verdict)
			}
			if got := w.gatewayDPoP(raw, "DPoP", proof(t, client, raw)); got != tc.verdict {
				t.Fatalf("gateway with the key's proof: %q, want %q", got, tc.verdict)
			}
			if tc.verdict != "" {
				return // a bad token is refused for itself before any proof is read
			}
			for _, c := range []struct {
				scheme, proof string
				want          event.Reason
			}{
				{"Bearer", "", event.ReasonDPoPRequired},
				{"DPoP", "", event.ReasonDPoPRequired},
				{"DPoP", proof(t, thief, raw), event.ReasonBadDPoPProof},
			} {
				if got := w.gatewayDPoP(raw, c.scheme, c.proof); got != c.want {
					t.Errorf("%s, proof %v: gateway %q, want %q", c.scheme, c.proof != "", got, c.want)
				}
			}
		})
	}
}

// Binding.Check on its own: a nil Binding refuses bound tokens (fail
// closed) and lets unbound Bearer tokens by.
func TestNilBindingFailsClosed(t *testing.T) {
	var b *verdict.Binding
	bound := &verdict.Result{Claims: &token.Claims{Cnf: token.Confirmation{JKT: "x"}}}
	if r := b.Check(context.Background(), bound, "t", verdict.Possession{Scheme: "DPoP", Proofs: []string{"p"}}, t0); r.Reason != event.ReasonBadDPoPProof {
		t.Fatalf("nil binding: %q", r.Reason)
	}
	plain := &verdict.Result{Claims: &token.Claims{}}
	if r := b.Check(context.Background(), plain, "t", verdict.Possession{Scheme: "Bearer"}, t0); r.Reason != "" {
		t.Fatalf("unbound bearer: %q", r.Reason)
	}
}
