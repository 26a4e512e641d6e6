package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

// spelling sends an original request to the decision API the way one proxy
// does.
type spelling struct {
	name string
	req  func(method, target, tok string) *http.Request
}

var spellings = []spelling{
	{"nginx", func(method, target, tok string) *http.Request {
		r := httptest.NewRequest("GET", DecidePath, nil)
		r.Header.Set("X-Original-Method", method)
		r.Header.Set("X-Original-URI", target)
		setTok(r, tok)
		return r
	}},
	{"traefik-caddy", func(method, target, tok string) *http.Request {
		r := httptest.NewRequest("GET", DecidePath, nil)
		r.Header.Set("X-Forwarded-Method", method)
		r.Header.Set("X-Forwarded-Uri", target)
		r.Header.Set("X-Forwarded-Host", "shop.example:8443")
		r.Header.Set("X-Forwarded-Proto", "https")
		setTok(r, tok)
		return r
	}},
	{"both-agreeing", func(method, target, tok string) *http.Request {
		r := httptest.NewRequest("GET", DecidePath, nil)
		r.Header.Set("X-Original-Method", method)
		r.Header.Set("X-Forwarded-Method", method)
		r.Header.Set("X-Original-URI", target)
		r.Header.Set("X-Forwarded-Uri", target)
		setTok(r, tok)
		return r
	}},
	{"envoy-http", func(method, target, tok string) *http.Request {
		// As the wire carries it: the target is not re-encoded.
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(method + " " + ExtAuthzPrefix + target + " HTTP/1.1\r\nHost: shop.example\r\n\r\n")))
		if err != nil {
			return nil // Go's server answers 400 before any handler
		}
		setTok(r, tok)
		return r
	}},
}

func setTok(r *http.Request, tok string) {
	r.RemoteAddr = "127.0.0.1:40000"
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
}

func (e *env) decide(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	e.g.DecisionHandler().ServeHTTP(w, r)
	return w
}

func (c *capture) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ev)
}

// assertDecision checks a decision API answer and its one event.
func assertDecision(t *testing.T, e *env, w *httptest.ResponseRecorder, before int, want event.Reason, sub string) {
	t.Helper()
	if got := e.pub.n() - before; got != 1 {
		t.Fatalf("%d access events for one decision, want 1", got)
	}
	ev := e.pub.last(t)
	if want == "" {
		if w.Code != http.StatusOK {
			t.Fatalf("status %d (%s), want 200", w.Code, w.Header().Get(HeaderReason))
		}
		if w.Header().Get(DefaultSubjectHeader) != sub || w.Header().Get(HeaderKID) != "k1" || w.Header().Get(HeaderJTI) != "jti-"+sub {
			t.Errorf("identity headers %v", w.Header())
		}
		if w.Header().Get(HeaderReason) != "" || w.Header().Get("WWW-Authenticate") != "" {
			t.Errorf("allow carries refusal headers %v", w.Header())
		}
		if ev.Verdict != event.Allow || ev.Reason != "" || ev.Status != 200 {
			t.Errorf("event %+v", ev)
		}
		return
	}
	code := http.StatusUnauthorized
	if want == event.ReasonBlockedSource {
		code = http.StatusForbidden
	}
	if w.Code != code {
		t.Fatalf("status %d, want %d (%s)", w.Code, code, w.Header().Get(HeaderReason))
	}
	if got := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, `Bearer error="invalid_token"`) {
		t.Errorf("WWW-Authenticate %q", got)
	}
	if got := w.Header().Get(HeaderReason); got != string(want) {
		t.Errorf("X-Custos-Reason %q, want %q", got, want)
	}
	if w.Header().Get(DefaultSubjectHeader) != "" {
		t.Error("a refusal carries an identity header")
	}
	var body map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body["error_description"] != string(want) {
		t.Errorf("body %s", w.Body)
	}
	if ev.Verdict != event.Deny || ev.Reason != want || ev.Status != code {
		t.Errorf("event verdict=%s reason=%s status=%d, want deny %s %d", ev.Verdict, ev.Reason, ev.Status, want, code)
	}
}

// The decision API and the proxy mode decide alike: same reason, same event
// fields, for every spelling a proxy uses.
func TestDecideAgreesWithProxy(t *testing.T) {
	e := newEnv(t, testConfig())
	good := e.issue(t, claimsFor("m-1"))
	revoked := e.issue(t, claimsFor("m-3"))
	e.led.set(revoked, ledger.Revoked)
	fc := claimsFor("m-1")
	fc.JTI = "forged-1"
	forged := e.mint(t, fc) // real key, never issued
	expired := claimsFor("m-1")
	expired.ExpiresAt = t0.Unix() - 100
	wrongAud := claimsFor("m-1")
	wrongAud.Audience = "other"
	decoy := e.issue(t, claimsFor("decoy-7"))
	for _, tc := range []struct {
		name, method, target string
		tok                  string
		want                 event.Reason
		sub                  string
	}{
		{"ok/own-addresses", "GET", addr, good, "", "m-1"},
		{"ok/query", "GET", addr + "?page=2&x=%2F", good, "", "m-1"},
		{"ok/other-method-same-path", "DELETE", addr, good, "", "m-1"},
		{"ok/unbound-route", "GET", "/api/catalog", good, "", "m-1"},
		{"fail/missing-token", "GET", addr, "", event.ReasonMissingToken, ""},
		{"fail/not-issued", "GET", addr, forged, event.ReasonNotIssued, ""},
		{"fail/revoked-token", "GET", "/api/members/m-3/addresses", revoked, event.ReasonRevokedToken, ""},
		{"fail/subject-mismatch", "GET", "/api/members/m-2/addresses", good, event.ReasonSubjectMismatch, ""},
		{"fail/subject-mismatch-post", "POST", "/api/members/m-2/addresses", good, event.ReasonSubjectMismatch, ""},
		{"fail/decoy-route", "GET", "/api/members/decoy-7/addresses", good, event.ReasonDecoySubject, ""},
		{"fail/decoy-token", "GET", "/api/catalog", decoy, event.ReasonDecoySubject, ""},
		{"fail/expired", "GET", addr, e.issue(t, expired), event.ReasonExpired, ""},
		{"fail/wrong-audience", "GET", addr, e.issue(t, wrongAud), event.ReasonWrongAudience, ""},
		{"fail/garbage", "GET", addr, "a.b.c", event.ReasonMalformed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The proxy mode's answer, as the reference.
			up := e.upstream.Load()
			pw := e.do(tc.method, tc.target, tc.tok)
			proxyEv := e.pub.last(t)
			if tc.want == "" && (pw.Code != 200 || e.upstream.Load() != up+1) {
				t.Fatalf("proxy mode refused: %d", pw.Code)
			}
			if tc.want != "" && proxyEv.Reason != tc.want {
				t.Fatalf("proxy mode reason %q, want %q", proxyEv.Reason, tc.want)
			}
			for _, sp := range spellings {
				t.Run(sp.name, func(t *testing.T) {
					before := e.pub.n()
					w := e.decide(sp.req(tc.method, tc.target, tc.tok))
					assertDecision(t, e, w, before, tc.want, tc.sub)
					ev := e.pub.last(t)
					p, _, _ := strings.Cut(tc.target, "?")
					if ev.Method != tc.method || ev.Path != p || ev.Route != proxyEv.Route || ev.Subject != proxyEv.Subject ||
						ev.Token != proxyEv.Token || ev.SrcIP != proxyEv.SrcIP || ev.Gateway != "gw-test" ||
						strings.Join(ev.DataClasses, ",") != strings.Join(proxyEv.DataClasses, ",") {
						t.Errorf("decision event %+v\nproxy event %+v", ev, proxyEv)
					}
				})
			}
			if e.upstream.Load() != up+1 && tc.want == "" || tc.want != "" && e.upstream.Load() != up {
				t.Error("the decision API reached the upstream")
			}
		})
	}
}

// The path that is checked is the path the client sent, in canonical form
// only: any spelling that a proxy or an upstream could read as another path
// is refused, whichever proxy asks, even when its canonical form is the
// token holder's own path.
func TestDecidePathVariants(t *testing.T) {
	e := newEnv(t, testConfig())
	good := e.issue(t, claimsFor("m-1"))
	for _, target := range []string{
		"/api/members/m-2/../m-1/addresses",
		"/api/members/m-2/%2e%2e/m-1/addresses",
		"/api/members/m-2/%2E%2E/m-1/addresses",
		"/api/members/m-1/./addresses",
		"/api/members/m-1/%2e/addresses",
		"/api/members//m-1/addresses",
		"//api/members/m-1/addresses",
		"/api/members/m-1/addresses/.",
		"/api/members/m-1%2Faddresses",
		"/api/members/m-1%2faddresses",
		"/api/members/m%2D1/addresses", // encoded unreserved character
		"/api/members/%6D-1/addresses",
		"/api/members/m-1%252Faddresses", // encoded '%': decoded twice by some
		"/api/members/m-1\\addresses",
		"/api/members/m-1%5Caddresses",
		"/api/members/m-1%00/addresses",
		"/api/members/m-1%0a/addresses",
		"/api/members/m-1%/addresses",
		"/api/members/m-1%zz/addresses",
		"/api/members/m-1 /addresses",
		"/api/members/m-1;x=1/addresses",
		"/api/members/m-1/addresses#frag",
		"api/members/m-1/addresses",
		"*",
		"/" + strings.Repeat("a", MaxPathBytes),
		"/API/members/m-1/addresses",
	} {
		for _, sp := range spellings {
			t.Run(sp.name+"/"+target[:min(len(target), 60)], func(t *testing.T) {
				r := sp.req("GET", target, good)
				if r == nil || sp.name == "envoy-http" && target[0] != '/' {
					t.Skip("not a request Go's server reads, or not an ext_authz path")
				}
				before := e.pub.n()
				assertDecision(t, e, e.decide(r), before, event.ReasonUnknownRoute, "")
			})
		}
	}
	// The same for paths that no route covers when unmatched paths are
	// forwarded: the decision API forwards only what it checked.
	cfg := testConfig()
	cfg.Unmatched = Forward
	f := newEnv(t, cfg)
	tok := f.issue(t, claimsFor("m-1"))
	for _, target := range []string{"/other/./x", "/other//x", "/other/%78", "/other/x%2Fy"} {
		before := f.pub.n()
		assertDecision(t, f, f.decide(spellings[0].req("GET", target, tok)), before, event.ReasonUnknownRoute, "")
	}
	before := f.pub.n()
	assertDecision(t, f, f.decide(spellings[0].req("GET", "/other/x", tok)), before, "", "m-1")
	// A request without a target is malformed, not a route question.
	r := spellings[0].req("GET", "", good)
	before = e.pub.n()
	assertDecision(t, e, e.decide(r), before, event.ReasonMalformed, "")
}

// A header that the client sent through the proxy cannot choose what is
// checked: two spellings that disagree, a repeated header, or a missing one
// refuse the decision.
func TestDecideHeaderConflicts(t *testing.T) {
	e := newEnv(t, testConfig())
	good := e.issue(t, claimsFor("m-1"))
	for _, tc := range []struct {
		name string
		hdr  [][2]string
		want event.Reason
	}{
		{"ok/nginx", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URI", addr}}, ""},
		{"ok/lowercase-names", [][2]string{{"x-original-method", "GET"}, {"x-original-uri", addr}}, ""},
		{"ok/traefik", [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", addr}}, ""},
		{"fail/uri-spellings-disagree", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URI", "/api/members/m-2/addresses"}, {"X-Forwarded-Uri", addr}}, event.ReasonMalformed},
		{"fail/uri-spellings-disagree-2", [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Original-URI", addr}, {"X-Forwarded-Uri", "/api/catalog"}}, event.ReasonMalformed},
		{"fail/uri-twice", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URI", addr}, {"x-original-uri", "/api/catalog"}}, event.ReasonMalformed},
		{"fail/method-spellings-disagree", [][2]string{{"X-Original-Method", "GET"}, {"X-Forwarded-Method", "POST"}, {"X-Original-URI", addr}}, event.ReasonMalformed},
		{"fail/method-twice", [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", addr}}, event.ReasonMalformed},
		{"fail/no-uri", [][2]string{{"X-Original-Method", "GET"}}, event.ReasonMalformed},
		{"fail/no-method", [][2]string{{"X-Original-URI", addr}}, event.ReasonMalformed},
		{"fail/bad-method", [][2]string{{"X-Original-Method", "GE T"}, {"X-Original-URI", addr}}, event.ReasonMalformed},
		{"fail/host-twice", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URI", addr}, {"X-Forwarded-Host", "a"}, {"X-Forwarded-Host", "b"}}, event.ReasonMalformed},
		{"fail/host-with-path", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URI", addr}, {"X-Forwarded-Host", "a/b"}}, event.ReasonMalformed},
		{"fail/two-authorizations", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URI", addr}, {"Authorization", "Bearer x"}}, event.ReasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", DecidePath, nil)
			setTok(r, good)
			for _, h := range tc.hdr {
				r.Header.Add(h[0], h[1])
			}
			before := e.pub.n()
			assertDecision(t, e, e.decide(r), before, tc.want, "m-1")
		})
	}
	// Over the wire, header names in any letter case land on one spelling.
	srv := httptest.NewServer(e.g.DecisionHandler())
	defer srv.Close()
	for _, raw := range []string{
		"x-original-uri: /api/members/m-2/addresses\r\nX-FORWARDED-URI: " + addr,
		"X-Original-Uri: " + addr + "\r\nx-Original-URI: /api/catalog",
	} {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /v1/decide HTTP/1.1\r\nHost: x\r\nX-Original-Method: GET\r\nAuthorization: Bearer %s\r\n%s\r\nConnection: close\r\n\r\n", good, raw)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 401 || resp.Header.Get(HeaderReason) != "malformed" {
			t.Errorf("%q: %d %q", raw, resp.StatusCode, resp.Header.Get(HeaderReason))
		}
	}
	// Not a decision: no event, a plain answer.
	before := e.pub.n()
	for _, p := range []string{"/", "/v1/decide/x", "/ext_authzz/api", "/v1/decidex"} {
		if w := e.decide(httptest.NewRequest("GET", p, nil)); w.Code != 404 {
			t.Errorf("%s: %d", p, w.Code)
		}
	}
	if w := e.decide(httptest.NewRequest("POST", DecidePath, nil)); w.Code != 405 {
		t.Errorf("POST /v1/decide: %d", w.Code)
	}
	if e.pub.n() != before {
		t.Error("a request that is no decision made an event")
	}
}

// The client address is the proxy's report only when the proxy is trusted;
// a block on it refuses with 403.
func TestDecideSource(t *testing.T) {
	cfg := testConfig()
	cfg.TrustedProxies = []string{"10.0.0.0/8"}
	e := newEnv(t, cfg)
	good := e.issue(t, claimsFor("m-1"))
	mk := func(peer, xff string) *http.Request {
		r := spellings[0].req("GET", addr, good)
		r.RemoteAddr = peer
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		return r
	}
	for _, tc := range []struct {
		name, peer, xff, want string
	}{
		{"trusted-peer", "10.1.2.3:5000", "203.0.113.9", "203.0.113.9"},
		{"trusted-peer-chain", "10.1.2.3:5000", "198.51.100.1, 203.0.113.9, 10.9.9.9", "203.0.113.9"},
		{"untrusted-peer", "192.0.2.50:5000", "203.0.113.9", "192.0.2.50"},
		{"no-xff", "10.1.2.3:5000", "", "10.1.2.3"},
	} {
		e.decide(mk(tc.peer, tc.xff))
		if got := e.pub.last(t).SrcIP; got != tc.want {
			t.Errorf("%s: src %q, want %q", tc.name, got, tc.want)
		}
	}
	// Envoy's reported source: believed from a trusted peer only.
	for _, tc := range []struct{ peer, reported, want string }{
		{"10.1.2.3:5000", "203.0.113.7:4444", "203.0.113.7"},
		{"192.0.2.50:5000", "203.0.113.7:4444", "192.0.2.50"},
	} {
		e.g.Answer(context.Background(), Query{Request: Request{Method: "GET", Target: addr, Header: http.Header{"Authorization": {"Bearer " + good}}, Peer: tc.peer}, ReportedSource: tc.reported})
		if got := e.pub.last(t).SrcIP; got != tc.want {
			t.Errorf("reported %s via %s: src %q, want %q", tc.reported, tc.peer, got, tc.want)
		}
	}
	e.g.Block(netip.MustParsePrefix("203.0.113.0/24"), t0.Add(time.Minute), "crawl")
	before := e.pub.n()
	assertDecision(t, e, e.decide(mk("10.1.2.3:5000", "203.0.113.9")), before, event.ReasonBlockedSource, "")
	// The same client behind an untrusted peer is not the blocked source.
	before = e.pub.n()
	assertDecision(t, e, e.decide(mk("192.0.2.50:5000", "203.0.113.9")), before, "", "m-1")
	v := e.g.Answer(context.Background(), Query{Request: Request{Method: "GET", Target: addr, Header: http.Header{"Authorization": {"Bearer " + good}}, Peer: "10.0.0.1:1"}, ReportedSource: "203.0.113.200:1"})
	if v.Status != 403 || v.Reason != event.ReasonBlockedSource || v.Allowed() {
		t.Errorf("blocked reported source: %+v", v)
	}
}

// Observe mode: allowed, but an unverified token gives no identity.
func TestDecideObserve(t *testing.T) {
	cfg := testConfig()
	cfg.Modes = map[event.Reason]Mode{event.ReasonNotIssued: Observe, event.ReasonBadSignature: Observe}
	e := newEnv(t, cfg)
	forged := e.mint(t, claimsFor("m-1"))
	before := e.pub.n()
	w := e.decide(spellings[0].req("GET", addr, forged))
	if w.Code != 200 || e.pub.n() != before+1 || e.pub.last(t).Reason != event.ReasonNotIssued {
		t.Fatalf("observe: %d %+v", w.Code, e.pub.last(t))
	}
	if w.Header().Get(DefaultSubjectHeader) != "m-1" {
		t.Errorf("verified but not issued: subject %q", w.Header().Get(DefaultSubjectHeader))
	}
	// The decision API's own route rule follows the route check's mode.
	ocfg := testConfig()
	ocfg.Modes = map[event.Reason]Mode{event.ReasonUnknownRoute: Observe}
	o := newEnv(t, ocfg)
	otok := o.issue(t, claimsFor("m-1"))
	before = o.pub.n()
	if w := o.decide(spellings[0].req("GET", "/api/members/m-1/./addresses", otok)); w.Code != 200 || o.pub.last(t).Reason != event.ReasonUnknownRoute || o.pub.n() != before+1 {
		t.Errorf("observed unknown_route: %d %+v", w.Code, o.pub.last(t))
	}
	before = o.pub.n()
	assertDecision(t, o, o.decide(spellings[0].req("GET", "/api/members/m-2/./addresses", otok)), before, event.ReasonSubjectMismatch, "")
	c := claimsFor("m-1")
	bad := token.Claims(c)
	tok := e.mint(t, bad)
	tok = tok[:len(tok)-4] + "AAAA" // signature no longer verifies
	w = e.decide(spellings[0].req("GET", addr, tok))
	if w.Code != 200 || w.Header().Get(DefaultSubjectHeader) != "" || w.Header().Get(HeaderJTI) != "" {
		t.Errorf("unverified token in observe mode: %d %v", w.Code, w.Header())
	}
}

// FuzzForwardAuth: whatever a proxy (or a client through it) puts in the
// forward-auth headers, the answer is an allow only for a canonical path
// whose decision the proxy mode would also allow, and every call yields
// exactly one event with a contract reason.
func FuzzForwardAuth(f *testing.F) {
	e := newEnv(f, testConfig())
	good := e.issue(f, claimsFor("m-1"))
	f.Add("GET", addr, "", "", "")
	f.Add("GET", "/api/members/m-2/addresses", addr, "GET", "shop")
	f.Add("POST", "/api/members/m-1/../m-2/addresses", "", "", "")
	f.Add("GET", "/api/members/m%2D1/addresses", "", "", "")
	f.Add("G\x00T", "/api/catalog?x", "/api/catalog?x", "G\x00T", "h:1")
	f.Add("", "", "/api/members/m-1/addresses", "GET", "")
	f.Fuzz(func(t *testing.T, om, ouri, furi, fm, fhost string) {
		r := httptest.NewRequest("GET", DecidePath, nil)
		setTok(r, good)
		for k, v := range map[string]string{"X-Original-Method": om, "X-Original-Uri": ouri, "X-Forwarded-Uri": furi, "X-Forwarded-Method": fm, "X-Forwarded-Host": fhost} {
			if v != "" {
				r.Header[k] = []string{v}
			}
		}
		before := e.pub.n()
		w := e.decide(r)
		if e.pub.n() != before+1 {
			t.Fatalf("%d events", e.pub.n()-before)
		}
		ev := e.pub.last(t)
		if w.Code != 200 {
			found := false
			for _, rr := range event.Reasons {
				found = found || string(rr) == w.Header().Get(HeaderReason)
			}
			if !found || ev.Reason != event.Reason(w.Header().Get(HeaderReason)) {
				t.Fatalf("reason %q, event %q", w.Header().Get(HeaderReason), ev.Reason)
			}
			return
		}
		q, err := ForwardAuth(r)
		if err != nil {
			t.Fatalf("allowed an unreadable request: %v", err)
		}
		p, _, _ := splitTarget(q.Target)
		if c, ok := canonicalPath(p); !ok || c != p || strings.Contains(p, "%") || strings.Contains(p, "//") {
			t.Fatalf("allowed a non-canonical target %q", q.Target)
		}
		if ev.Verdict != event.Allow || ev.Path != p {
			t.Fatalf("event %+v for allowed %q", ev, q.Target)
		}
		if ev.Route != "" && ev.Subject != "m-1" {
			t.Fatalf("allowed %q for subject %q", q.Target, ev.Subject)
		}
	})
}

// BenchmarkAnswer: one decision on a warm token (signature verified before,
// ledger answered from memory), the work behind every decision API call;
// events go to a publisher that drops them.
func BenchmarkAnswer(b *testing.B) {
	e := newEnv(b, testConfig())
	g, err := New(testConfig(), e.ks, e.led, dropEvents{}, func() time.Time { return t0 })
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	good := e.issue(b, claimsFor("m-1"))
	q := Query{Request: Request{Method: "GET", Target: addr, Header: http.Header{"Authorization": {"Bearer " + good}, "User-Agent": {"bench"}}, Peer: "127.0.0.1:40000"}}
	g.Answer(context.Background(), q)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if v := g.Answer(context.Background(), q); !v.Allowed() {
			b.Fatal(v.Reason)
		}
	}
}

type dropEvents struct{}

func (dropEvents) Publish(event.Access) {}
