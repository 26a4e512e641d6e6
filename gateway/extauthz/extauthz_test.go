package extauthz

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

type keySet struct{ k keys.Key }

func (s keySet) Lookup(kid string) (keys.Key, bool) { return s.k, kid == s.k.KID }

type memLedger struct {
	mu sync.Mutex
	m  map[ledger.Hash]ledger.Status
}

func (l *memLedger) Status(_ context.Context, h ledger.Hash) (ledger.Status, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[h], nil
}

func (l *memLedger) set(tok string, s ledger.Status) {
	l.mu.Lock()
	l.m[ledger.HashToken(tok)] = s
	l.mu.Unlock()
}

type events struct {
	mu sync.Mutex
	ev []event.Access
}

func (e *events) Publish(a event.Access) { e.mu.Lock(); e.ev = append(e.ev, a); e.mu.Unlock() }
func (e *events) n() int                 { e.mu.Lock(); defer e.mu.Unlock(); return len(e.ev) }
func (e *events) last() event.Access     { e.mu.Lock(); defer e.mu.Unlock(); return e.ev[len(e.ev)-1] }

type env struct {
	priv   ed25519.PrivateKey
	led    *memLedger
	ev     *events
	g      *gateway.Gateway
	client authv3.AuthorizationClient
}

const iss, aud = "https://custos.test", "shop-api"

// start runs the gRPC server on a loopback port and dials it with the
// client Envoy's own types describe.
func start(t *testing.T, trusted ...string) *env {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	e := &env{priv: priv, led: &memLedger{m: map[ledger.Hash]ledger.Status{}}, ev: &events{}}
	cfg := gateway.Config{
		GatewayName: "envoy-authz", Issuer: iss, Audience: gateway.Audiences{aud},
		Routes: []gateway.Route{
			{Pattern: "GET /api/members/{member}/addresses", DataClasses: []string{event.ClassAddress}, SubjectParam: "member"},
			{Pattern: "GET /api/members/{member}/profile", DataClasses: []string{event.ClassName}, SubjectParam: "member"},
		},
		Decoys:         []string{"decoy-9"},
		TrustedProxies: trusted,
	}
	g, err := gateway.New(cfg, keySet{keys.Key{KID: "k1", Alg: keys.EdDSA, State: keys.Active, Public: priv.Public()}}, e.led, e.ev, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	e.g = g
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	New(g).Register(gs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.client = authv3.NewAuthorizationClient(conn)
	return e
}

func (e *env) mint(t *testing.T, sub, jti string, issued bool) string {
	t.Helper()
	now := time.Now()
	tok, err := token.Sign(e.priv, keys.EdDSA, "k1", token.Claims{Issuer: iss, Subject: sub, Audience: aud,
		IssuedAt: now.Unix() - 5, NotBefore: now.Unix() - 5, ExpiresAt: now.Unix() + 600, JTI: jti, ClientID: "login"})
	if err != nil {
		t.Fatal(err)
	}
	if issued {
		e.led.set(tok, ledger.Live)
	}
	return tok
}

// recorded fills a recorded CheckRequest shape from testdata.
func recorded(t *testing.T, file, method, path, authz string) *authv3.CheckRequest {
	t.Helper()
	b, err := os.ReadFile("testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	js := func(s string) string { q, _ := json.Marshal(s); return string(q[1 : len(q)-1]) }
	s := strings.NewReplacer(
		"{{METHOD}}", js(method), "{{PATH}}", js(path), "{{AUTHORIZATION}}", js(authz),
		"{{PATH_B64}}", base64.StdEncoding.EncodeToString([]byte(path)),
		"{{AUTHORIZATION_B64}}", base64.StdEncoding.EncodeToString([]byte(authz)),
	).Replace(string(b))
	var req authv3.CheckRequest
	if err := protojson.Unmarshal([]byte(s), &req); err != nil {
		t.Fatal(err)
	}
	if authz == "" {
		delete(req.Attributes.Request.Http.Headers, "authorization")
		if hm := req.Attributes.Request.Http.HeaderMap; hm != nil {
			hs := hm.Headers[:0]
			for _, h := range hm.Headers {
				if h.Key != "authorization" {
					hs = append(hs, h)
				}
			}
			hm.Headers = hs
		}
	}
	return &req
}

func headerOf(hs []*corev3.HeaderValueOption, k string) (string, bool) {
	for _, h := range hs {
		if h.GetHeader().GetKey() == k {
			return h.GetHeader().GetValue(), true
		}
	}
	return "", false
}

// check sends one CheckRequest and asserts the answer and its one event.
func (e *env) check(t *testing.T, req *authv3.CheckRequest, want event.Reason, sub string) *authv3.CheckResponse {
	t.Helper()
	before := e.ev.n()
	resp, err := e.client.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.ev.n() - before; n != 1 {
		t.Fatalf("%d access events for one Check, want 1", n)
	}
	ev := e.ev.last()
	if want == "" {
		ok := resp.GetOkResponse()
		if resp.GetStatus().GetCode() != int32(codes.OK) || ok == nil {
			t.Fatalf("want OK, got %v", resp)
		}
		for k, v := range map[string]string{"x-custos-subject": sub, "x-custos-kid": "k1"} {
			if got, _ := headerOf(ok.GetHeaders(), k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		for _, h := range ok.GetHeaders() {
			if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				t.Errorf("identity header %s appended, not overwritten", h.GetHeader().GetKey())
			}
		}
		if ev.Verdict != event.Allow || ev.Status != 200 {
			t.Errorf("event %+v", ev)
		}
		return resp
	}
	code, http := codes.Unauthenticated, typev3.StatusCode_Unauthorized
	if want == event.ReasonBlockedSource {
		code, http = codes.PermissionDenied, typev3.StatusCode_Forbidden
	}
	d := resp.GetDeniedResponse()
	if resp.GetStatus().GetCode() != int32(code) || d == nil || d.GetStatus().GetCode() != http {
		t.Fatalf("want %v/%v for %s, got %v", code, http, want, resp)
	}
	if got, _ := headerOf(d.GetHeaders(), "x-custos-reason"); got != string(want) {
		t.Errorf("x-custos-reason %q, want %q", got, want)
	}
	if got, _ := headerOf(d.GetHeaders(), "www-authenticate"); !strings.HasPrefix(got, `Bearer error="invalid_token"`) {
		t.Errorf("www-authenticate %q", got)
	}
	var body map[string]string
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil || body["error_description"] != string(want) {
		t.Errorf("body %q", d.GetBody())
	}
	if ev.Verdict != event.Deny || ev.Reason != want || ev.Status != int(http) {
		t.Errorf("event verdict=%s reason=%s status=%d", ev.Verdict, ev.Reason, ev.Status)
	}
	return resp
}

func TestCheck(t *testing.T) {
	e := start(t)
	good := e.mint(t, "m-1", "j-good", true)
	forged := e.mint(t, "m-1", "j-forged", false) // the real key, never issued
	revoked := e.mint(t, "m-1", "j-revoked", true)
	e.led.set(revoked, ledger.Revoked)
	own := "/api/members/m-1/addresses"
	for _, file := range []string{"check_request.json", "check_request_header_map.json"} {
		t.Run(file, func(t *testing.T) {
			for _, tc := range []struct {
				name, method, path, authz string
				want                      event.Reason
			}{
				{"ok/own", "GET", own, "Bearer " + good, ""},
				{"ok/own-query", "GET", own + "?page=2", "Bearer " + good, ""},
				{"ok/own-lowercase-scheme", "GET", own, "bearer " + good, ""},
				{"fail/stolen-key", "GET", own, "Bearer " + forged, event.ReasonNotIssued},
				{"fail/subject-mismatch", "GET", "/api/members/m-2/addresses", "Bearer " + good, event.ReasonSubjectMismatch},
				{"fail/subject-mismatch-other-method", "DELETE", "/api/members/m-2/profile", "Bearer " + good, event.ReasonSubjectMismatch},
				{"fail/decoy", "GET", "/api/members/decoy-9/profile", "Bearer " + good, event.ReasonDecoySubject},
				{"fail/revoked", "GET", own, "Bearer " + revoked, event.ReasonRevokedToken},
				{"fail/missing-token", "GET", own, "", event.ReasonMissingToken},
				{"fail/basic-auth", "GET", own, "Basic bTox", event.ReasonMissingToken},
				{"fail/garbage", "GET", own, "Bearer x.y.z", event.ReasonMalformed},
				{"fail/dot-segments", "GET", "/api/members/m-2/../m-1/addresses", "Bearer " + good, event.ReasonUnknownRoute},
				{"fail/encoded-dots", "GET", "/api/members/m-2/%2e%2e/m-1/addresses", "Bearer " + good, event.ReasonUnknownRoute},
				{"fail/double-slash", "GET", "/api/members//m-1/addresses", "Bearer " + good, event.ReasonUnknownRoute},
				{"fail/encoded-slash", "GET", "/api/members/m-1%2Faddresses", "Bearer " + good, event.ReasonUnknownRoute},
				{"fail/encoded-unreserved", "GET", "/api/members/m%2D1/addresses", "Bearer " + good, event.ReasonUnknownRoute},
				{"fail/case", "GET", "/API/members/m-1/addresses", "Bearer " + good, event.ReasonUnknownRoute},
				{"fail/unknown-route", "GET", "/api/admin/export", "Bearer " + good, event.ReasonUnknownRoute},
				{"fail/no-method", "", own, "Bearer " + good, event.ReasonMalformed},
				{"fail/bad-method", "G T", own, "Bearer " + good, event.ReasonMalformed},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp := e.check(t, recorded(t, file, tc.method, tc.path, tc.authz), tc.want, "m-1")
					ev := e.ev.last()
					if tc.want == "" {
						p, _, _ := strings.Cut(tc.path, "?")
						if ev.Path != p || ev.Route != "GET /api/members/{member}/addresses" || ev.Subject != "m-1" || ev.Token.JTI != "j-good" || ev.UserAgent != "curl/8.4.0" {
							t.Errorf("event %+v", ev)
						}
						if got, _ := headerOf(resp.GetOkResponse().GetHeaders(), "x-custos-jti"); got != "j-good" {
							t.Errorf("x-custos-jti %q", got)
						}
					}
					// The peer (this test) is not a trusted proxy: Envoy's
					// reported source is not believed.
					if ev.SrcIP != "127.0.0.1" {
						t.Errorf("src_ip %q from an untrusted peer", ev.SrcIP)
					}
				})
			}
		})
	}
	// What the client sent under identity or address names never reaches
	// the upstream: Envoy is told to remove it.
	resp := e.check(t, recorded(t, "check_request.json", "GET", own, "Bearer "+good), "", "m-1")
	rm := strings.Join(resp.GetOkResponse().GetHeadersToRemove(), ",")
	for _, k := range []string{"x-custos_subject", "x-real-ip"} {
		if !strings.Contains(rm, k) {
			t.Errorf("headers_to_remove %q lacks %s", rm, k)
		}
	}
	if got, _ := headerOf(resp.GetOkResponse().GetHeaders(), "x-custos-subject"); got != "m-1" {
		t.Errorf("x-custos-subject %q", got)
	}
	// A refusal that is no token question: no identity at all.
	e.check(t, recorded(t, "check_request.json", "GET", "/api/members/m-2/profile", "Bearer "+good), event.ReasonSubjectMismatch, "")
}

// Envoy's reported client address counts only from a trusted Envoy, and a
// block on it answers 403 / PERMISSION_DENIED.
func TestCheckSource(t *testing.T) {
	e := start(t, "127.0.0.0/8")
	good := e.mint(t, "m-1", "j-good", true)
	own := "/api/members/m-1/addresses"
	e.check(t, recorded(t, "check_request.json", "GET", own, "Bearer "+good), "", "m-1")
	if got := e.ev.last().SrcIP; got != "203.0.113.9" {
		t.Fatalf("src_ip %q, want Envoy's reported 203.0.113.9", got)
	}
	e.g.Block(netip.MustParsePrefix("203.0.113.0/24"), time.Now().Add(time.Minute), "crawl")
	e.check(t, recorded(t, "check_request.json", "GET", own, "Bearer "+good), event.ReasonBlockedSource, "")
	// An untrusted Envoy cannot put a client in (or out of) a block.
	u := start(t)
	u.g.Block(netip.MustParsePrefix("203.0.113.0/24"), time.Now().Add(time.Minute), "crawl")
	tok := u.mint(t, "m-1", "j-u", true)
	u.check(t, recorded(t, "check_request.json", "GET", own, "Bearer "+tok), "", "m-1")
}

// FuzzQuery: any CheckRequest bytes give one answer and one event, and an
// allow only for a readable request with a canonical path.
func FuzzQuery(f *testing.F) {
	b, _ := os.ReadFile("testdata/check_request.json")
	var seed authv3.CheckRequest
	if err := protojson.Unmarshal([]byte(strings.NewReplacer("{{METHOD}}", "GET", "{{PATH}}", "/api/members/m-1/addresses", "{{AUTHORIZATION}}", "Bearer x").Replace(string(b))), &seed); err != nil {
		f.Fatal(err)
	}
	raw, _ := proto.Marshal(&seed)
	f.Add(raw)
	f.Add([]byte{})
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	ev := &events{}
	g, err := gateway.New(gateway.Config{Issuer: iss, Audience: gateway.Audiences{aud},
		Routes: []gateway.Route{{Pattern: "GET /api/members/{member}/addresses", SubjectParam: "member"}}},
		keySet{keys.Key{KID: "k1", Alg: keys.EdDSA, State: keys.Active, Public: priv.Public()}}, &memLedger{m: map[ledger.Hash]ledger.Status{}}, ev, nil)
	if err != nil {
		f.Fatal(err)
	}
	s := New(g)
	f.Fuzz(func(t *testing.T, b []byte) {
		var req authv3.CheckRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		before := ev.n()
		resp, err := s.Check(context.Background(), &req)
		if err != nil || resp == nil || ev.n() != before+1 {
			t.Fatalf("answer %v %v, %d events", resp, err, ev.n()-before)
		}
		if resp.GetOkResponse() != nil {
			t.Fatalf("allowed with no issued token: %v", &req)
		}
	})
}
