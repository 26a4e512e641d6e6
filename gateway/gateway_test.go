package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/internal/geodb"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

var b64 = base64.RawURLEncoding

var t0 = time.Unix(2_000_000_100, 0)

type fakeKeys struct {
	mu sync.Mutex
	m  map[string]keys.Key
}

func (f *fakeKeys) Lookup(kid string) (keys.Key, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.m[kid]
	return k, ok
}

func (f *fakeKeys) setState(kid string, s keys.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.m[kid]
	k.State = s
	f.m[kid] = k
}

type fakeLedger struct {
	mu  sync.Mutex
	m   map[ledger.Hash]ledger.Status
	err error
}

func (f *fakeLedger) Status(_ context.Context, h ledger.Hash) (ledger.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return ledger.Unknown, f.err
	}
	return f.m[h], nil
}

func (f *fakeLedger) set(raw string, s ledger.Status) {
	f.mu.Lock()
	f.m[ledger.HashToken(raw)] = s
	f.mu.Unlock()
}

type capture struct {
	mu sync.Mutex
	ev []event.Access
}

func (c *capture) Publish(e event.Access) {
	c.mu.Lock()
	c.ev = append(c.ev, e)
	c.mu.Unlock()
}

func (c *capture) last(t *testing.T) event.Access {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ev) == 0 {
		t.Fatal("no event published")
	}
	return c.ev[len(c.ev)-1]
}

type env struct {
	priv     ed25519.PrivateKey
	ks       *fakeKeys
	led      *fakeLedger
	pub      *capture
	g        *Gateway
	h        http.Handler
	upstream atomic.Int32
	lastSubj atomic.Value
	lastHdr  atomic.Value
}

func testConfig() Config {
	return Config{
		GatewayName: "gw-test",
		Issuer:      "https://custos.test",
		Audience:    Audiences{"shop-api"},
		Routes: []Route{
			{Pattern: "GET /api/members/{memberId}/addresses", DataClasses: []string{event.ClassName, event.ClassAddress}, SubjectParam: "memberId"},
			{Pattern: "GET /api/catalog", DataClasses: nil},
		},
		Decoys: []string{"decoy-7"},
	}
}

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	e := &env{
		priv: priv,
		ks:   &fakeKeys{m: map[string]keys.Key{"k1": {KID: "k1", Alg: keys.EdDSA, State: keys.Active, Public: priv.Public()}}},
		led:  &fakeLedger{m: map[ledger.Hash]ledger.Status{}},
		pub:  &capture{},
	}
	g, err := New(cfg, e.ks, e.led, e.pub, func() time.Time { return t0 })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	e.g = g
	e.h = g.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.upstream.Add(1)
		e.lastSubj.Store(r.Header.Get(DefaultSubjectHeader))
		e.lastHdr.Store(r.Header.Clone())
		if c, ok := ClaimsFromContext(r.Context()); !ok || c.Subject != r.Header.Get(DefaultSubjectHeader) {
			t.Errorf("claims in context %+v, %v", c, ok)
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"name":"Kim"}`))
	}))
	return e
}

func claimsFor(sub string) token.Claims {
	return token.Claims{
		Issuer: "https://custos.test", Subject: sub, Audience: "shop-api",
		IssuedAt: t0.Unix() - 60, NotBefore: t0.Unix() - 60, ExpiresAt: t0.Unix() + 840,
		JTI: "jti-" + sub, ClientID: "login", SessionID: "sess-1",
	}
}

// mint signs claims with the real key; issue also records them in the ledger.
func (e *env) mint(t testing.TB, c token.Claims) string {
	t.Helper()
	raw, err := token.Sign(e.priv, keys.EdDSA, "k1", c)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (e *env) issue(t testing.TB, c token.Claims) string {
	raw := e.mint(t, c)
	e.led.set(raw, ledger.Live)
	return raw
}

func craft(priv ed25519.PrivateKey, header string, c any) string {
	p, _ := json.Marshal(c)
	in := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString(p)
	return in + "." + b64.EncodeToString(ed25519.Sign(priv, []byte(in)))
}

func (e *env) do(method, path, tok string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, nil)
	r.RemoteAddr = "127.0.0.1:40000"
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

func assertRefused(t *testing.T, e *env, w *httptest.ResponseRecorder, before int32, want event.Reason) {
	t.Helper()
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401 (%s)", w.Code, w.Body)
	}
	if got := w.Header().Get("WWW-Authenticate"); got != `Bearer error="invalid_token", error_description="`+string(want)+`"` {
		t.Errorf("WWW-Authenticate %q", got)
	}
	var body map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body["error"] != "invalid_token" || body["error_description"] != string(want) {
		t.Errorf("body %s", w.Body)
	}
	if e.upstream.Load() != before {
		t.Error("upstream saw a refused request")
	}
	ev := e.pub.last(t)
	if ev.Verdict != event.Deny || ev.Reason != want || ev.Status != 401 {
		t.Errorf("event verdict=%s reason=%s status=%d, want deny %s 401", ev.Verdict, ev.Reason, ev.Status, want)
	}
}

const addr = "/api/members/m-1/addresses"

func TestAttackSuite(t *testing.T) {
	e := newEnv(t, testConfig())
	_, attacker, _ := ed25519.GenerateKey(rand.Reader)
	good := e.issue(t, claimsFor("m-1"))
	c := claimsFor("m-1")
	hdr := `{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}`

	var jkuHits atomic.Int32
	jku := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { jkuHits.Add(1) }))
	defer jku.Close()

	pubBytes := e.priv.Public().(ed25519.PublicKey)
	hsIn := b64.EncodeToString([]byte(`{"alg":"HS256","kid":"k1","typ":"at+jwt"}`)) + "." + strings.Split(good, ".")[1]
	mac := hmac.New(sha256.New, pubBytes)
	mac.Write([]byte(hsIn))
	hs256 := hsIn + "." + b64.EncodeToString(mac.Sum(nil))

	parts := strings.Split(good, ".")
	edited := claimsFor("m-2")
	editedPayload, _ := json.Marshal(edited)

	copied := claimsFor("m-2")
	copied.JTI = c.JTI // same jti as the issued token, other claims

	big := c
	big.Scope = strings.Repeat("a", 9<<10)

	attackerJWK := `{"kty":"OKP","crv":"Ed25519","x":"` + b64.EncodeToString(attacker.Public().(ed25519.PublicKey)) + `"}`

	at := func(f func(*token.Claims)) token.Claims { x := claimsFor("m-1"); f(&x); return x }

	for _, tc := range []struct {
		name string
		tok  func() string
		path string
		want event.Reason
	}{
		{"fail/missing-token", func() string { return "" }, addr, event.ReasonMissingToken},
		{"fail/alg-none", func() string {
			return b64.EncodeToString([]byte(`{"alg":"none","kid":"k1","typ":"at+jwt"}`)) + "." + parts[1] + "."
		}, addr, event.ReasonBadSignature},
		{"fail/hs256-with-public-key", func() string { return hs256 }, addr, event.ReasonBadSignature},
		{"fail/embedded-jwk", func() string {
			return craft(attacker, `{"alg":"EdDSA","kid":"k1","typ":"at+jwt","jwk":`+attackerJWK+`}`, c)
		}, addr, event.ReasonBadSignature},
		{"fail/embedded-jwk-without-kid", func() string {
			return craft(attacker, `{"alg":"EdDSA","typ":"at+jwt","jwk":`+attackerJWK+`}`, c)
		}, addr, event.ReasonUnknownKey},
		{"fail/jku-elsewhere", func() string {
			return craft(attacker, `{"alg":"EdDSA","kid":"attacker","typ":"at+jwt","jku":"`+jku.URL+`"}`, c)
		}, addr, event.ReasonUnknownKey},
		{"fail/kid-path-traversal", func() string {
			return craft(attacker, `{"alg":"EdDSA","kid":"../../../../dev/null","typ":"at+jwt"}`, c)
		}, addr, event.ReasonUnknownKey},
		{"fail/unknown-kid", func() string { return craft(attacker, `{"alg":"EdDSA","kid":"k9","typ":"at+jwt"}`, c) }, addr, event.ReasonUnknownKey},
		{"fail/expired", func() string { return e.issue(t, at(func(x *token.Claims) { x.ExpiresAt = t0.Unix() - 31 })) }, addr, event.ReasonExpired},
		{"fail/nbf-future", func() string { return e.issue(t, at(func(x *token.Claims) { x.NotBefore = t0.Unix() + 60 })) }, addr, event.ReasonNotYetValid},
		{"fail/iat-future", func() string { return e.issue(t, at(func(x *token.Claims) { x.IssuedAt = t0.Unix() + 60 })) }, addr, event.ReasonNotYetValid},
		{"fail/wrong-aud", func() string { return e.issue(t, at(func(x *token.Claims) { x.Audience = "admin-api" })) }, addr, event.ReasonWrongAudience},
		{"fail/wrong-iss", func() string { return e.issue(t, at(func(x *token.Claims) { x.Issuer = "https://evil.test" })) }, addr, event.ReasonWrongIssuer},
		{"fail/payload-edited-under-old-signature", func() string {
			return parts[0] + "." + b64.EncodeToString(editedPayload) + "." + parts[2]
		}, "/api/members/m-2/addresses", event.ReasonBadSignature},
		{"fail/real-key-never-issued", func() string { return e.mint(t, at(func(x *token.Claims) { x.JTI = "forged-jti" })) }, addr, event.ReasonNotIssued},
		{"fail/copied-jti-other-claims", func() string { return e.mint(t, copied) }, "/api/members/m-2/addresses", event.ReasonNotIssued},
		{"fail/duplicate-json-keys", func() string {
			p, _ := json.Marshal(c)
			return craft(e.priv, hdr, json.RawMessage(`{"sub":"m-9",`+string(p[1:])))
		}, addr, event.ReasonMalformed},
		{"fail/non-canonical-base64", func() string { return good + "=" }, addr, event.ReasonMalformed},
		{"fail/non-canonical-trailing-bits", func() string {
			s := parts[2]
			last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", s[len(s)-1])
			return parts[0] + "." + parts[1] + "." + s[:len(s)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last^1])
		}, addr, event.ReasonMalformed},
		{"fail/9KiB-token", func() string { return e.issue(t, big) }, addr, event.ReasonMalformed},
		{"fail/unknown-crit", func() string { return craft(e.priv, `{"alg":"EdDSA","kid":"k1","typ":"at+jwt","crit":["x"],"x":1}`, c) }, addr, event.ReasonMalformed},
		{"fail/subject-mismatch", func() string { return good }, "/api/members/m-2/addresses", event.ReasonSubjectMismatch},
		{"fail/subject-mismatch-other-method", func() string { return good }, "POST /api/members/m-2/addresses", event.ReasonSubjectMismatch},
		{"fail/subject-mismatch-dot-dot", func() string { return good }, "/api/members/m-1/../m-2/addresses", event.ReasonSubjectMismatch},
		{"fail/decoy-route-subject", func() string { return good }, "/api/members/decoy-7/addresses", event.ReasonDecoySubject},
		{"fail/decoy-token-subject", func() string { return e.issue(t, claimsFor("decoy-7")) }, "/api/members/decoy-7/addresses", event.ReasonDecoySubject},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method, p := "GET", tc.path
			if m, rest, ok := strings.Cut(tc.path, " "); ok {
				method, p = m, rest
			}
			before := e.upstream.Load()
			w := e.do(method, p, tc.tok())
			assertRefused(t, e, w, before, tc.want)
		})
	}
	if jkuHits.Load() != 0 {
		t.Errorf("jku URL was fetched %d times", jkuHits.Load())
	}

	t.Run("ok/issued", func(t *testing.T) {
		before := e.upstream.Load()
		w := e.do("GET", addr, good)
		if w.Code != 200 || e.upstream.Load() != before+1 {
			t.Fatalf("status %d, upstream %d", w.Code, e.upstream.Load()-before)
		}
		if ev := e.pub.last(t); ev.Verdict != event.Allow || ev.Reason != "" {
			t.Errorf("event %+v", ev)
		}
	})
	t.Run("ok/expired-within-leeway", func(t *testing.T) {
		w := e.do("GET", addr, e.issue(t, at(func(x *token.Claims) { x.ExpiresAt = t0.Unix() - 10 })))
		if w.Code != 200 {
			t.Fatalf("status %d %s", w.Code, w.Body)
		}
	})
	t.Run("fail/unrouted-path-refused", func(t *testing.T) {
		before := e.upstream.Load()
		assertRefused(t, e, e.do("GET", "/other", ""), before, event.ReasonUnknownRoute)
		assertRefused(t, e, e.do("GET", "/other", good), before, event.ReasonUnknownRoute)
	})
	t.Run("ok/unmatched-forward-still-needs-token", func(t *testing.T) {
		cfg := testConfig()
		cfg.Unmatched = Forward
		e := newEnv(t, cfg)
		good := e.issue(t, claimsFor("m-1"))
		before := e.upstream.Load()
		assertRefused(t, e, e.do("GET", "/other", ""), before, event.ReasonMissingToken)
		if w := e.do("GET", "/other", good); w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
		if ev := e.pub.last(t); ev.Route != "" || ev.Subject != "m-1" {
			t.Errorf("event route %q subject %q", ev.Route, ev.Subject)
		}
	})
}

func TestKeyAndTokenState(t *testing.T) {
	e := newEnv(t, testConfig())
	good := e.issue(t, claimsFor("m-1"))
	if w := e.do("GET", addr, good); w.Code != 200 { // warms the verified cache
		t.Fatalf("status %d", w.Code)
	}
	for _, tc := range []struct {
		name  string
		state keys.State
		want  event.Reason
	}{
		{"ok/verify-only", keys.VerifyOnly, ""},
		{"fail/revoked", keys.Revoked, event.ReasonRevokedKey},
		{"fail/retired", keys.Retired, event.ReasonRevokedKey},
		{"ok/active-again", keys.Active, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.ks.setState("k1", tc.state)
			for _, tok := range []string{good, e.issue(t, claimsFor("m-1-"+string(tc.state)))} {
				before := e.upstream.Load()
				w := e.do("GET", "/api/catalog", tok)
				if tc.want == "" {
					if w.Code != 200 {
						t.Fatalf("status %d %s", w.Code, w.Body)
					}
					continue
				}
				assertRefused(t, e, w, before, tc.want)
			}
		})
	}
	t.Run("fail/revoked-token", func(t *testing.T) {
		e.led.set(good, ledger.Revoked)
		before := e.upstream.Load()
		assertRefused(t, e, e.do("GET", addr, good), before, event.ReasonRevokedToken)
		e.led.set(good, ledger.Live)
	})
	t.Run("fail/ledger-down", func(t *testing.T) {
		e.led.mu.Lock()
		e.led.err = errors.New("connection refused")
		e.led.mu.Unlock()
		defer func() { e.led.mu.Lock(); e.led.err = nil; e.led.mu.Unlock() }()
		before := e.upstream.Load()
		assertRefused(t, e, e.do("GET", addr, good), before, event.ReasonLedgerUnavailable)
		if n := counterValue(t, e.g, "deny", "ledger_unavailable"); n != 1 {
			t.Errorf("ledger_unavailable counted %v times", n)
		}
	})
	t.Run("fail/blocked-source", func(t *testing.T) {
		e.g.Block(netip.MustParsePrefix("127.0.0.0/8"), t0.Add(time.Minute), "crawl")
		before := e.upstream.Load()
		assertRefused(t, e, e.do("GET", addr, good), before, event.ReasonBlockedSource)
		e.g.Block(netip.MustParsePrefix("127.0.0.0/8"), t0.Add(-time.Second), "expired block")
		if w := e.do("GET", addr, good); w.Code != 200 {
			t.Errorf("expired block still refuses: %d", w.Code)
		}
		if len(e.g.Blocks()) != 0 {
			t.Errorf("Blocks() lists expired entries")
		}
	})
}

func counterValue(t *testing.T, g *Gateway, verdict, reason string) float64 {
	t.Helper()
	m := &dtoMetric{}
	if err := g.requests.WithLabelValues(verdict, reason).Write(&m.Metric); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestObserveMode(t *testing.T) {
	cfg := testConfig()
	cfg.Modes = map[event.Reason]Mode{event.ReasonNotIssued: Observe, event.ReasonSubjectMismatch: Observe}
	e := newEnv(t, cfg)
	forged := e.mint(t, claimsFor("m-1")) // signed with the real key, never issued
	w := e.do("GET", addr, forged)
	if w.Code != 200 || e.upstream.Load() != 1 {
		t.Fatalf("observe: status %d upstream %d", w.Code, e.upstream.Load())
	}
	if ev := e.pub.last(t); ev.Verdict != event.Allow || ev.Reason != event.ReasonNotIssued {
		t.Errorf("event verdict=%s reason=%s, want allow not_issued", ev.Verdict, ev.Reason)
	}
	// A check still in enforce mode refuses, with its own reason.
	expired := claimsFor("m-1")
	expired.ExpiresAt = t0.Unix() - 100
	assertRefused(t, e, e.do("GET", addr, e.mint(t, expired)), 1, event.ReasonExpired)
	// Two observed failures: the first in check order is reported.
	e.do("GET", "/api/members/m-2/addresses", forged)
	if ev := e.pub.last(t); ev.Verdict != event.Allow || ev.Reason != event.ReasonNotIssued {
		t.Errorf("event verdict=%s reason=%s", ev.Verdict, ev.Reason)
	}
}

func TestHeaderStripping(t *testing.T) {
	e := newEnv(t, testConfig())
	good := e.issue(t, claimsFor("m-1"))
	w := e.do("GET", addr, good, "X-Custos-Subject", "m-666", "x-custos-subject", "m-667", "X-Custos-Verified", "yes", "X-Other", "kept")
	if w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	h := e.lastHdr.Load().(http.Header)
	if got := h.Values(DefaultSubjectHeader); len(got) != 1 || got[0] != "m-1" {
		t.Errorf("subject header %q, want [m-1]", got)
	}
	if h.Get("X-Custos-Verified") != "" || h.Get("X-Other") != "kept" {
		t.Errorf("headers upstream: %v", h)
	}
	// A refused request's spoofed header never travels either: nothing travels.
	before := e.upstream.Load()
	assertRefused(t, e, e.do("GET", addr, "", "X-Custos-Subject", "m-1"), before, event.ReasonMissingToken)
}

func TestEventFields(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.EventsFile = filepath.Join(dir, "events.jsonl")
	cfg.TrustedProxies = []string{"127.0.0.0/8"}
	cfg.GeoIP = []string{writeMMDB(t, dir)}
	e := newEnv(t, cfg)
	good := e.issue(t, claimsFor("m-1"))
	w := e.do("GET", addr, good, "User-Agent", "shop-app/1.0", "X-Forwarded-For", "1.2.3.4")
	if w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	ev := e.pub.last(t)
	want := event.Access{
		Time: t0.UTC(), Gateway: "gw-test", RequestID: ev.RequestID, Method: "GET",
		Route: "GET /api/members/{memberId}/addresses", Path: addr, Status: 200, Bytes: int64(len(`{"name":"Kim"}`)),
		LatencyUS: ev.LatencyUS, SrcIP: "1.2.3.4", Country: "KR", ASN: 4766, UserAgent: "shop-app/1.0",
		Token:   event.Token{JTI: "jti-m-1", KID: "k1", Sub: "m-1", Aud: "shop-api", IAT: t0.Unix() - 60, EXP: t0.Unix() + 840},
		Verdict: event.Allow, Reason: "", Subject: "m-1", DataClasses: []string{"name", "address"},
	}
	gotJ, _ := json.Marshal(ev)
	wantJ, _ := json.Marshal(want)
	if string(gotJ) != string(wantJ) {
		t.Errorf("event\n got %s\nwant %s", gotJ, wantJ)
	}
	if ev.RequestID == "" || ev.LatencyUS < 0 {
		t.Errorf("request id %q latency %d", ev.RequestID, ev.LatencyUS)
	}
	// The console names networks from the same databases.
	for _, tc := range []struct {
		ip   string
		want Location
	}{
		{"1.2.3.4", Location{Country: "KR", ASN: 4766, Org: "Korea Telecom"}},
		{"::ffff:1.2.3.200", Location{Country: "KR", ASN: 4766, Org: "Korea Telecom"}},
		{"9.9.9.9", Location{}},
		{"2001:db8::1", Location{}},
	} {
		if got := e.g.Locate(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("Locate(%s) = %+v, want %+v", tc.ip, got, tc.want)
		}
	}
	// An untrusted peer's X-Forwarded-For is ignored.
	e.g.trusted = nil
	e.do("GET", addr, good, "X-Forwarded-For", "1.2.3.4")
	if ev := e.pub.last(t); ev.SrcIP != "127.0.0.1" || ev.Country != "" {
		t.Errorf("untrusted XFF believed: %s %s", ev.SrcIP, ev.Country)
	}
	e.do("GET", "/api/catalog", "garbage.token.here")
	e.g.Close()
	b, err := os.ReadFile(cfg.EventsFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d event lines, want 3", len(lines))
	}
	var first event.Access
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil || first.RequestID != ev.RequestID && first.SrcIP != "1.2.3.4" {
		t.Errorf("first line %s: %v", lines[0], err)
	}
	sig := strings.Split(good, ".")[2]
	if strings.Contains(string(b), sig) || strings.Contains(string(b), "garbage.token") {
		t.Error("events file contains a raw token")
	}
	var last event.Access
	_ = json.Unmarshal([]byte(lines[2]), &last)
	if last.Reason != event.ReasonMalformed || last.Route != "GET /api/catalog" || last.DataClasses == nil {
		t.Errorf("refused event %+v", last)
	}
}

func writeMMDB(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "geo.mmdb")
	if err := geodb.Write(p, "custos-test", []geodb.Network{
		{Prefix: netip.MustParsePrefix("1.2.3.0/24"), Country: "KR", ASN: 4766, Org: "Korea Telecom"},
	}); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"fail/no-issuer", func(c *Config) { c.Issuer = "" }},
		{"fail/no-audience", func(c *Config) { c.Audience = nil }},
		{"fail/huge-leeway", func(c *Config) { c.Leeway = time.Hour }},
		{"fail/unknown-mode-check", func(c *Config) { c.Modes = map[event.Reason]Mode{"nope": Observe} }},
		{"fail/bad-mode", func(c *Config) { c.Modes = map[event.Reason]Mode{event.ReasonExpired: "maybe"} }},
		{"fail/subject-param-missing", func(c *Config) { c.Routes[0].SubjectParam = "id" }},
		{"fail/bad-pattern", func(c *Config) { c.Routes = append(c.Routes, Route{Pattern: "GET /a/{x"}) }},
		{"fail/duplicate-route", func(c *Config) { c.Routes = append(c.Routes, c.Routes[0]) }},
		{"fail/bad-proxy-cidr", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/33"} }},
		{"fail/proxy-everyone", func(c *Config) { c.TrustedProxies = []string{"0.0.0.0/0"} }},
		{"fail/proxy-halves", func(c *Config) { c.TrustedProxies = []string{"0.0.0.0/1", "128.0.0.0/1"} }},
		{"fail/proxy-everyone-v6", func(c *Config) { c.TrustedProxies = []string{"::/0"} }},
		{"fail/missing-geoip", func(c *Config) { c.GeoIP = []string{"/nonexistent.mmdb"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			tc.mod(&cfg)
			if _, err := New(cfg, &fakeKeys{}, &fakeLedger{}, nil, nil); err == nil {
				t.Fatal("New accepted a bad config")
			}
		})
	}
}

// FuzzRoutes: any route configuration is accepted or refused, never a panic,
// and an accepted subject wildcard reads back from a matching path.
func FuzzRoutes(f *testing.F) {
	f.Add("GET /api/members/{memberId}/addresses", "memberId")
	f.Add("/files/{path...}", "path")
	f.Add("GET /a/{x}/{x}", "x")
	f.Add("GET /a/{x", "x")
	f.Fuzz(func(t *testing.T, pattern, param string) {
		cfg := testConfig()
		cfg.Routes = []Route{{Pattern: pattern, SubjectParam: param}}
		_, _ = New(cfg, &fakeKeys{}, &fakeLedger{}, nil, nil)
	})
}

// FuzzMiddleware: whatever arrives in the Authorization header, a gateway
// without an issued token never lets it through, and refuses it with a
// contract reason.
func FuzzMiddleware(f *testing.F) {
	e := newEnv(f, testConfig())
	good := e.mint(f, claimsFor("m-1"))
	f.Add("Bearer " + good)
	f.Add("Bearer a.b.c")
	f.Add("bearer  " + good)
	f.Add("Basic Zm9vOmJhcg==")
	f.Fuzz(func(t *testing.T, authz string) {
		r := httptest.NewRequest("GET", addr, nil)
		r.Header.Set("Authorization", authz)
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, r)
		if w.Code != http.StatusUnauthorized {
			t.Fatalf("status %d for %q", w.Code, authz)
		}
		var body map[string]string
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		reason := event.Reason(body["error_description"])
		found := false
		for _, r := range event.Reasons {
			found = found || r == reason
		}
		if !found {
			t.Fatalf("reason %q is not a contract reason", reason)
		}
	})
}
