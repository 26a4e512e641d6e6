package authority

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/custos-dev/custos/dpop"
)

func thumbprint(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

func proof(t *testing.T, k crypto.Signer, method, htu, ath, nonce string, at time.Time) string {
	t.Helper()
	c := dpop.NewClaims(rand.Text(), method, htu, "", nonce, at)
	c.ATH = ath
	p, err := dpop.Sign(k, c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A token request with a valid DPoP proof gets a token bound to the proof's
// key (cnf.jkt, token_type DPoP); a bad, replayed or missing-when-required
// proof gets invalid_dpop_proof and nothing is issued.
func TestOAuthDPoPIssuance(t *testing.T) {
	f, p := newOAuthFixture(t)
	ctx := context.Background()
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ep := f.auth.TokenEndpoint()
	withProof := func(id, secret string, proofs ...string) func(*http.Request) {
		return func(r *http.Request) {
			r.SetBasicAuth(id, secret)
			for _, pr := range proofs {
				r.Header.Add("DPoP", pr)
			}
		}
	}
	cc := url.Values{"grant_type": {"client_credentials"}}
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		form url.Values
	}{
		{"ok/eddsa-client-credentials", edKey, cc},
		{"ok/es256-client-credentials", ecKey, cc},
		{"ok/eddsa-token-exchange", edKey, exchange(p.idToken(t, f.now, "1001", nil))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _, out := f.post(t, tc.form, withProof(f.client.ID, f.secret, proof(t, tc.key, "POST", ep, "", "", f.now)))
			if st != 200 || out["token_type"] != "DPoP" {
				t.Fatalf("status %d %v", st, out)
			}
			if c := f.checkToken(t, out["access_token"].(string)); c.Cnf.JKT != thumbprint(t, tc.key.Public()) {
				t.Fatalf("cnf.jkt %q, want the proof key's thumbprint", c.Cnf.JKT)
			}
		})
	}
	bound, boundSecret, _ := f.creds.AddClient(ctx, "bound", []string{"shop-api"}, "")
	if err := f.creds.SetClientAuth(ctx, bound.ID, ClientAuth{RequireDPoP: true}); err != nil {
		t.Fatal(err)
	}
	replayed := proof(t, edKey, "POST", ep, "", "", f.now)
	if st, _, out := f.post(t, cc, withProof(bound.ID, boundSecret, replayed)); st != 200 || out["token_type"] != "DPoP" {
		t.Fatalf("bound client with a proof: %d %v", st, out)
	}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	forged := proof(t, edKey, "POST", ep, "", "", f.now)
	forged = forged[:len(forged)-4] + "AAAA"
	for _, tc := range []struct {
		name string
		set  func(*http.Request)
	}{
		{"fail/required-missing", withProof(bound.ID, boundSecret)},
		{"fail/replayed", withProof(f.client.ID, f.secret, replayed)},
		{"fail/two-proofs", withProof(f.client.ID, f.secret, proof(t, edKey, "POST", ep, "", "", f.now), proof(t, otherKey, "POST", ep, "", "", f.now))},
		{"fail/htu-listener-not-issuer", withProof(f.client.ID, f.secret, proof(t, edKey, "POST", f.srv.URL+TokenPath, "", "", f.now))},
		{"fail/htu-other-path", withProof(f.client.ID, f.secret, proof(t, edKey, "POST", "https://custos.test/v1/tokens", "", "", f.now))},
		{"fail/htm-get", withProof(f.client.ID, f.secret, proof(t, edKey, "GET", ep, "", "", f.now))},
		{"fail/htm-lower", withProof(f.client.ID, f.secret, proof(t, edKey, "post", ep, "", "", f.now))},
		{"fail/iat-old", withProof(f.client.ID, f.secret, proof(t, edKey, "POST", ep, "", "", f.now.Add(-10*time.Minute)))},
		{"fail/iat-future", withProof(f.client.ID, f.secret, proof(t, edKey, "POST", ep, "", "", f.now.Add(10*time.Minute)))},
		{"fail/ath-at-token-endpoint", withProof(f.client.ID, f.secret, proof(t, edKey, "POST", ep, dpop.ATH("x"), "", f.now))},
		{"fail/bad-signature", withProof(f.client.ID, f.secret, forged)},
		{"fail/not-a-jwt", withProof(f.client.ID, f.secret, "x.y.z")},
		{"fail/empty", withProof(f.client.ID, f.secret, "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := f.ledgerSize()
			st, _, out := f.post(t, cc, tc.set)
			if st != 400 || out["error"] != "invalid_dpop_proof" {
				t.Fatalf("status %d %v", st, out)
			}
			if f.ledgerSize() != n {
				t.Fatal("a token was issued")
			}
		})
	}

	// With server nonces: a proof without one gets use_dpop_nonce and a
	// nonce in DPoP-Nonce; the retry with it gets the bound token.
	nonces := dpop.NewNonces([]byte("0123456789abcdef0123456789abcdef"), time.Minute)
	mux := http.NewServeMux()
	(&Handler{Auth: f.auth, Creds: f.creds, Nonces: nonces}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	f.srv.URL, srv.URL = srv.URL, f.srv.URL
	defer func() { f.srv.URL, srv.URL = srv.URL, f.srv.URL }()
	st, h, out := f.post(t, cc, withProof(f.client.ID, f.secret, proof(t, edKey, "POST", ep, "", "", f.now)))
	if st != 400 || out["error"] != "use_dpop_nonce" || h.Get("DPoP-Nonce") == "" {
		t.Fatalf("without nonce: %d %v %v", st, out, h)
	}
	if st, _, out := f.post(t, cc, withProof(f.client.ID, f.secret, proof(t, edKey, "POST", ep, "", "stale", f.now))); st != 400 || out["error"] != "use_dpop_nonce" {
		t.Fatalf("stale nonce: %d %v", st, out)
	}
	st, _, out = f.post(t, cc, withProof(f.client.ID, f.secret, proof(t, edKey, "POST", ep, "", h.Get("DPoP-Nonce"), f.now)))
	if st != 200 || out["token_type"] != "DPoP" {
		t.Fatalf("with nonce: %d %v", st, out)
	}
}
