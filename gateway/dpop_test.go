package gateway

import (
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/dpop"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/token"
)

var (
	clientKey = ed25519.NewKeyFromSeed([]byte("client-key-seed-0123456789abcdef"))
	otherKey  = ed25519.NewKeyFromSeed([]byte("other-key-seed-0123456789abcdefg"))
)

const memberURL = "http://api.shop.example/api/members/m-1/addresses"

func jkt(t testing.TB, k ed25519.PrivateKey) string {
	j, err := dpop.Thumbprint(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// boundClaims are m-1's claims bound to clientKey.
func boundClaims(t testing.TB) token.Claims {
	c := claimsFor("m-1")
	c.Cnf.JKT = jkt(t, clientKey)
	return c
}

var proofSeq int

func proofFor(t testing.TB, k ed25519.PrivateKey, method, url, tok string, edit func(*dpop.Claims)) string {
	t.Helper()
	proofSeq++
	c := dpop.NewClaims("p-"+strings.Repeat("x", proofSeq%7)+time.Duration(proofSeq).String(), method, url, tok, "", t0)
	if edit != nil {
		edit(&c)
	}
	p, err := dpop.Sign(k, c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// send sends GET memberURL's path with Host api.shop.example, the token
// under scheme, and the given DPoP header values.
func (e *env) send(method, scheme, tok string, proofs ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/api/members/m-1/addresses", nil)
	r.Host = "api.shop.example"
	r.RemoteAddr = "127.0.0.1:40000"
	if tok != "" {
		r.Header.Set("Authorization", scheme+" "+tok)
	}
	for _, p := range proofs {
		r.Header.Add("DPoP", p)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

func assertDPoP(t *testing.T, e *env, w *httptest.ResponseRecorder, want event.Reason) {
	t.Helper()
	ev := e.pub.last(t)
	if want == "" {
		if w.Code != 200 || ev.Verdict != event.Allow || ev.Reason != "" {
			t.Fatalf("status %d, event %s %s; want allowed (%s)", w.Code, ev.Verdict, ev.Reason, w.Header().Get("WWW-Authenticate"))
		}
		return
	}
	if w.Code != 401 || ev.Verdict != event.Deny || ev.Reason != want {
		t.Fatalf("status %d, event %s %q; want 401 %q", w.Code, ev.Verdict, ev.Reason, want)
	}
	wa := w.Header().Get("WWW-Authenticate")
	if !strings.HasPrefix(wa, "DPoP ") || !strings.Contains(wa, `algs="EdDSA ES256"`) || !strings.Contains(wa, string(want)) {
		t.Fatalf("WWW-Authenticate %q", wa)
	}
	if want == event.ReasonBadDPoPProof && !strings.Contains(wa, `error="invalid_dpop_proof"`) && !strings.Contains(wa, `error="use_dpop_nonce"`) {
		t.Fatalf("WWW-Authenticate %q", wa)
	}
	if e.lastSubj.Load() != nil && w.Header().Get(DefaultSubjectHeader) != "" {
		t.Fatal("refusal carries the subject")
	}
}

// A bound token passes only with a fresh proof of its key for this request;
// every other way of presenting it is refused, and the event says why.
func TestDPoPProxy(t *testing.T) {
	e := newEnv(t, testConfig())
	bound := e.issue(t, boundClaims(t))
	plain := e.issue(t, claimsFor("m-1"))
	good := func() string { return proofFor(t, clientKey, "GET", memberURL, bound, nil) }

	p := good()
	assertDPoP(t, e, e.send("GET", "DPoP", bound, p), "")
	t.Run("replayed proof", func(t *testing.T) { assertDPoP(t, e, e.send("GET", "DPoP", bound, p), event.ReasonBadDPoPProof) })
	cases := []struct {
		name   string
		scheme string
		tok    string
		proofs []string
		want   event.Reason
	}{
		{"scheme lower case", "dpop", bound, []string{good()}, ""},
		{"bound under Bearer", "Bearer", bound, []string{good()}, event.ReasonDPoPRequired},
		{"bound under bearer", "bearer", bound, nil, event.ReasonDPoPRequired},
		{"no proof", "DPoP", bound, nil, event.ReasonDPoPRequired},
		{"empty proof", "DPoP", bound, []string{""}, event.ReasonBadDPoPProof},
		{"two proofs", "DPoP", bound, []string{good(), good()}, event.ReasonBadDPoPProof},
		{"other key", "DPoP", bound, []string{proofFor(t, otherKey, "GET", memberURL, bound, nil)}, event.ReasonBadDPoPProof},
		{"other member", "DPoP", bound, []string{proofFor(t, clientKey, "GET", strings.Replace(memberURL, "m-1", "m-2", 1), bound, nil)}, event.ReasonBadDPoPProof},
		{"other method", "DPoP", bound, []string{proofFor(t, clientKey, "POST", memberURL, bound, nil)}, event.ReasonBadDPoPProof},
		{"https proof over http", "DPoP", bound, []string{proofFor(t, clientKey, "GET", strings.Replace(memberURL, "http:", "https:", 1), bound, nil)}, event.ReasonBadDPoPProof},
		{"other host", "DPoP", bound, []string{proofFor(t, clientKey, "GET", strings.Replace(memberURL, "api.shop", "api.evil", 1), bound, nil)}, event.ReasonBadDPoPProof},
		{"ath of another token", "DPoP", bound, []string{proofFor(t, clientKey, "GET", memberURL, plain, nil)}, event.ReasonBadDPoPProof},
		{"stale", "DPoP", bound, []string{proofFor(t, clientKey, "GET", memberURL, bound, func(c *dpop.Claims) { c.IAT -= 120 })}, event.ReasonBadDPoPProof},
		{"host case and default port", "DPoP", bound, []string{proofFor(t, clientKey, "GET", "http://API.shop.example:80/api/members/m-1/addresses?x=1", bound, nil)}, ""},
		{"unbound under DPoP", "DPoP", plain, []string{proofFor(t, clientKey, "GET", memberURL, plain, nil)}, event.ReasonBadDPoPProof},
		{"unbound under Bearer with a stray proof", "Bearer", plain, []string{good()}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.upstream.Load()
			assertDPoP(t, e, e.send("GET", tc.scheme, tc.tok, tc.proofs...), tc.want)
			if tc.want != "" && e.upstream.Load() != before {
				t.Fatal("refused request reached the upstream")
			}
		})
	}
	// A token copied from the client, without its key: every proof the
	// thief can make is refused.
	t.Run("stolen token, thief's own proof", func(t *testing.T) {
		thief := proofFor(t, otherKey, "GET", memberURL, bound, nil)
		assertDPoP(t, e, e.send("GET", "DPoP", bound, thief), event.ReasonBadDPoPProof)
	})
}

// In observe mode the DPoP checks report and let the request through.
func TestDPoPObserve(t *testing.T) {
	cfg := testConfig()
	cfg.Modes = map[event.Reason]Mode{event.ReasonDPoPRequired: Observe}
	e := newEnv(t, cfg)
	bound := e.issue(t, boundClaims(t))
	w := e.send("GET", "Bearer", bound)
	if ev := e.pub.last(t); w.Code != 200 || ev.Verdict != event.Allow || ev.Reason != event.ReasonDPoPRequired {
		t.Fatalf("status %d, event %s %q", w.Code, ev.Verdict, ev.Reason)
	}
	assertDPoP(t, e, e.send("GET", "DPoP", bound, "x.y.z"), event.ReasonBadDPoPProof)
}

// With nonces on, a proof without the current nonce is refused with a fresh
// one, which the client's next proof carries; replicas that share the secret
// accept each other's nonces, and a nonce from another secret is refused.
func TestDPoPNonce(t *testing.T) {
	cfg := testConfig()
	cfg.DPoP.Nonce = true
	cfg.DPoP.NonceSecret = []byte("0123456789abcdef0123456789abcdef")
	e := newEnv(t, cfg)
	bound := e.issue(t, boundClaims(t))
	w := e.send("GET", "DPoP", bound, proofFor(t, clientKey, "GET", memberURL, bound, nil))
	assertDPoP(t, e, w, event.ReasonBadDPoPProof)
	nonce := w.Header().Get("DPoP-Nonce")
	if nonce == "" || !strings.Contains(w.Header().Get("WWW-Authenticate"), `error="use_dpop_nonce"`) {
		t.Fatalf("no nonce offered: %v", w.Header())
	}
	withNonce := func(n string) func(*dpop.Claims) { return func(c *dpop.Claims) { c.Nonce = n } }
	assertDPoP(t, e, e.send("GET", "DPoP", bound, proofFor(t, clientKey, "GET", memberURL, bound, withNonce(nonce))), "")

	replica := newEnv(t, cfg)
	replica.led = e.led
	replica.g.prov, replica.g.checker.Ledger = e.led, e.led
	replica.ks = e.ks
	replica.g.checker.Keys = e.ks
	assertDPoP(t, replica, replica.send("GET", "DPoP", bound, proofFor(t, clientKey, "GET", memberURL, bound, withNonce(nonce))), "")

	cfg.DPoP.NonceSecret = []byte("fedcba9876543210fedcba9876543210")
	stranger := newEnv(t, cfg)
	stranger.g.checker.Keys, stranger.g.checker.Ledger = e.ks, e.led
	assertDPoP(t, stranger, stranger.send("GET", "DPoP", bound, proofFor(t, clientKey, "GET", memberURL, bound, withNonce(nonce))), event.ReasonBadDPoPProof)
}

// With a public URL configured, htu must name it whatever Host the request
// claims.
func TestDPoPPublicURL(t *testing.T) {
	cfg := testConfig()
	cfg.DPoP.PublicURL = "https://api.shop.example"
	e := newEnv(t, cfg)
	bound := e.issue(t, boundClaims(t))
	public := "https://api.shop.example/api/members/m-1/addresses"
	assertDPoP(t, e, e.send("GET", "DPoP", bound, proofFor(t, clientKey, "GET", public, bound, nil)), "")
	assertDPoP(t, e, e.send("GET", "DPoP", bound, proofFor(t, clientKey, "GET", memberURL, bound, nil)), event.ReasonBadDPoPProof)
	for _, bad := range []string{"ftp://x", "https://api.shop.example/path", "api.shop.example", "https://u@api.shop.example"} {
		c := testConfig()
		c.DPoP.PublicURL = bad
		if _, err := New(c, e.ks, e.led, nil, nil); err == nil {
			t.Errorf("public_url %q accepted", bad)
		}
	}
}

// The decision API reconstructs the URL the client addressed from the
// proxy's headers (Traefik, Caddy: X-Forwarded-Proto and -Host; nginx:
// X-Original-URI with the configured public URL) and decides as the proxy
// mode does, challenge included.
func TestDPoPDecisionAPI(t *testing.T) {
	e := newEnv(t, testConfig())
	bound := e.issue(t, boundClaims(t))
	target := "/api/members/m-1/addresses"
	traefik := func(proof string) *http.Request {
		r := httptest.NewRequest("GET", DecidePath, nil)
		r.RemoteAddr = "127.0.0.1:40000"
		r.Header.Set("X-Forwarded-Method", "GET")
		r.Header.Set("X-Forwarded-Uri", target)
		r.Header.Set("X-Forwarded-Host", "shop.example:8443")
		r.Header.Set("X-Forwarded-Proto", "https")
		r.Header.Set("Authorization", "DPoP "+bound)
		r.Header.Set("DPoP", proof)
		return r
	}
	w := e.decide(traefik(proofFor(t, clientKey, "GET", "https://shop.example:8443"+target, bound, nil)))
	if w.Code != 200 {
		t.Fatalf("traefik: %d %s", w.Code, w.Header().Get(HeaderReason))
	}
	w = e.decide(traefik(proofFor(t, clientKey, "GET", "http://shop.example:8443"+target, bound, nil)))
	if w.Code != 401 || w.Header().Get(HeaderReason) != string(event.ReasonBadDPoPProof) || !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "DPoP ") {
		t.Fatalf("traefik, wrong scheme: %d %v", w.Code, w.Header())
	}

	cfg := testConfig()
	cfg.DPoP.PublicURL = "https://api.shop.example"
	n := newEnv(t, cfg)
	n.g.checker.Keys, n.g.checker.Ledger = e.ks, e.led
	nginx := func(proof string) *http.Request {
		r := httptest.NewRequest("GET", DecidePath, nil)
		r.RemoteAddr = "127.0.0.1:40000"
		r.Header.Set("X-Original-Method", "GET")
		r.Header.Set("X-Original-URI", target)
		r.Header.Set("Authorization", "DPoP "+bound)
		if proof != "" {
			r.Header.Set("DPoP", proof)
		}
		return r
	}
	if w := n.decide(nginx(proofFor(t, clientKey, "GET", "https://api.shop.example"+target, bound, nil))); w.Code != 200 {
		t.Fatalf("nginx: %d %s", w.Code, w.Header().Get(HeaderReason))
	}
	if w := n.decide(nginx("")); w.Code != 401 || w.Header().Get(HeaderReason) != string(event.ReasonDPoPRequired) {
		t.Fatalf("nginx without proof: %d %v", w.Code, w.Header())
	}
	if ev := n.pub.last(t); ev.Reason != event.ReasonDPoPRequired {
		t.Fatalf("event reason %q", ev.Reason)
	}
}

// The signatures a request costs, counted: a token's once (then it is
// cached), a bound request's proof every time, and nothing else.
func TestSignatureChecks(t *testing.T) {
	e := newEnv(t, testConfig())
	plain := e.issue(t, claimsFor("m-1"))
	bound := e.issue(t, boundClaims(t))
	steps := []struct {
		name           string
		send           func() *httptest.ResponseRecorder
		tokens, proofs uint64
	}{
		{"cold bearer", func() *httptest.ResponseRecorder { return e.send("GET", "Bearer", plain) }, 1, 0},
		{"warm bearer", func() *httptest.ResponseRecorder { return e.send("GET", "Bearer", plain) }, 0, 0},
		{"cold bound", func() *httptest.ResponseRecorder {
			return e.send("GET", "DPoP", bound, proofFor(t, clientKey, "GET", memberURL, bound, nil))
		}, 1, 1},
		{"warm bound", func() *httptest.ResponseRecorder {
			return e.send("GET", "DPoP", bound, proofFor(t, clientKey, "GET", memberURL, bound, nil))
		}, 0, 1},
	}
	for _, s := range steps {
		t0, p0 := e.g.SignatureChecks()
		assertDPoP(t, e, s.send(), "")
		t1, p1 := e.g.SignatureChecks()
		if t1-t0 != s.tokens || p1-p0 != s.proofs {
			t.Fatalf("%s: %d token and %d proof signatures verified, want %d and %d", s.name, t1-t0, p1-p0, s.tokens, s.proofs)
		}
	}
}
