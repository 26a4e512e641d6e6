package provider_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/ledger/sqlite"
	"github.com/custos-dev/custos/provider"
	"github.com/custos-dev/custos/verdict"
)

// idp is a provider made in the test: its keys, served as a JWKS.
type idp struct {
	keys    map[string]crypto.Signer // by kid
	algs    map[string]jose.SignatureAlgorithm
	srv     *httptest.Server
	fetches atomic.Int32

	mu     sync.Mutex
	hidden map[string]bool // kids left out of the published set
}

// drop leaves kid out of the key set the provider publishes from now on.
func (p *idp) drop(kid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hidden[kid] = true
}

func newIDP(t testing.TB) *idp {
	t.Helper()
	p := &idp{keys: map[string]crypto.Signer{}, algs: map[string]jose.SignatureAlgorithm{}, hidden: map[string]bool{}}
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rs, _ := rsa.GenerateKey(rand.Reader, 2048)
	p.keys["ed"], p.algs["ed"] = ed, jose.EdDSA
	p.keys["ec"], p.algs["ec"] = ec, jose.ES256
	p.keys["rs"], p.algs["rs"] = rs, jose.RS256
	enc, _ := rsa.GenerateKey(rand.Reader, 2048)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		var set jose.JSONWebKeySet
		p.mu.Lock()
		defer p.mu.Unlock()
		for kid, k := range p.keys {
			if p.hidden[kid] {
				continue
			}
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Public(), KeyID: kid, Algorithm: string(p.algs[kid]), Use: "sig"})
		}
		// Providers publish encryption keys beside signing ones.
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: enc.Public(), KeyID: "enc", Algorithm: "RSA-OAEP", Use: "enc"})
		json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// sign makes a token with the provider's key kid.
func (p *idp) sign(t testing.TB, kid string, claims map[string]any) string {
	t.Helper()
	return signWith(t, p.keys[kid], p.algs[kid], kid, claims)
}

func signWith(t testing.TB, k crypto.Signer, alg jose.SignatureAlgorithm, kid string, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: k, KeyID: kid}},
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

const iss = "https://idp.shop.test/"

type fixture struct {
	idp     *idp
	set     *provider.Set
	led     *ledger.Ledger
	rec     *provider.Recorder
	checker verdict.Checker
	pol     verdict.Policy
	now     time.Time
	cfg     *provider.Config
	// ahead moves the clock of the key-set cache forward (a duration).
	ahead *atomic.Int64
}

func newFixture(t testing.TB, kind provider.Kind) *fixture {
	t.Helper()
	p := newIDP(t)
	cfg := provider.Config{Name: "shop-idp", Issuer: iss, JWKSURL: p.srv.URL, Audience: "shop-api", Kind: kind}
	if kind == provider.Hydra || kind == provider.Keycloak {
		cfg.AccessTokenLifespan = 10 * time.Minute
	}
	ahead := new(atomic.Int64)
	set, err := provider.NewSet([]provider.Config{cfg}, nil, func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) })
	if err != nil {
		t.Fatal(err)
	}
	b, err := sqlite.Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	led, err := ledger.New(context.Background(), b, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	named, _ := set.Named("shop-idp")
	return &fixture{idp: p, set: set, led: led, cfg: named, now: time.Now(), ahead: ahead,
		rec:     &provider.Recorder{Ledger: led, Now: time.Now},
		checker: verdict.Checker{Keys: noKeys{}, Ledger: led, Cache: verdict.NewCache(100), Providers: set},
		pol:     verdict.Policy{Issuer: "https://custos.test", Audience: []string{"shop-api"}, Leeway: 30 * time.Second}}
}

type noKeys struct{}

func (noKeys) Lookup(string) (k keys.Key, ok bool) { return }

func (f *fixture) check(raw string) verdict.Result {
	return f.checker.Check(context.Background(), raw, &f.pol, time.Now(), nil)
}

func (f *fixture) claims(extra map[string]any) map[string]any {
	now := f.now.Unix()
	c := map[string]any{"iss": iss, "sub": "member-1001", "aud": []string{"shop-api", "account"},
		"client_id": "shop-web", "iat": now, "exp": now + 300, "jti": "jti-0123456789"}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func (f *fixture) record(t testing.TB, r provider.Record) {
	t.Helper()
	if _, err := f.rec.Record(context.Background(), f.cfg, r); err != nil {
		t.Fatal(err)
	}
}

func rec(id string, exp int64) provider.Record {
	return provider.Record{Issuer: iss, JTI: id, Subject: "member-1001", ClientID: "shop-web",
		Audience: provider.Audience{"account", "shop-api"}, Exp: time.Unix(exp, 0)}
}

// A recorded token is served under every algorithm the provider signs with;
// a token the provider's own key signed but nobody recorded is not_issued.
func TestRecordedServedForgedRefused(t *testing.T) {
	f := newFixture(t, provider.Webhook)
	for _, kid := range []string{"ed", "ec", "rs"} {
		t.Run(kid, func(t *testing.T) {
			c := f.claims(map[string]any{"jti": "jti-real-" + kid})
			f.record(t, rec("jti-real-"+kid, c["exp"].(int64)))
			if r := f.check(f.idp.sign(t, kid, c)); !r.Good() || r.Claims.Subject != "member-1001" || r.Claims.Audience != "shop-api" {
				t.Fatalf("recorded token refused: %+v", r)
			}
			forged := f.claims(map[string]any{"jti": "jti-forged-" + kid})
			if r := f.check(f.idp.sign(t, kid, forged)); r.Reason != event.ReasonNotIssued {
				t.Fatalf("unrecorded token: reason %q, want not_issued", r.Reason)
			}
		})
	}
}

// A forgery that copies a recorded id but changes what the record binds is
// not_issued, from every side: sub, client, aud, a later exp; and an id
// moved from jti to custos_prv or the other way.
func TestForgeryWithRealIDRefused(t *testing.T) {
	f := newFixture(t, provider.Webhook)
	base := f.claims(nil)
	exp := base["exp"].(int64)
	f.record(t, rec("jti-0123456789", exp))
	prv := provider.NewPRV()
	r := rec("", exp)
	r.JTI, r.PRV = "", prv
	f.record(t, r)
	if res := f.check(f.idp.sign(t, "ed", base)); !res.Good() {
		t.Fatalf("the real token is refused: %+v", res)
	}
	if res := f.check(f.idp.sign(t, "ed", f.claims(map[string]any{"jti": "x-other", "custos_prv": prv}))); !res.Good() {
		t.Fatalf("the real prv token (top level) is refused: %+v", res)
	}
	if res := f.check(f.idp.sign(t, "ec", f.claims(map[string]any{"jti": "x-other", "ext": map[string]any{"custos_prv": prv}}))); !res.Good() {
		t.Fatalf("the real prv token (under ext) is refused: %+v", res)
	}
	for name, change := range map[string]map[string]any{
		"other_sub":            {"sub": "member-2002"},
		"other_client":         {"client_id": "evil-app"},
		"azp_other_client":     {"client_id": nil, "azp": "evil-app"},
		"other_aud":            {"aud": []string{"shop-api", "admin-api"}},
		"aud_narrowed":         {"aud": "shop-api"},
		"later_exp":            {"exp": exp + 60},
		"prv_other_sub":        {"custos_prv": prv, "sub": "member-2002"},
		"ext_prv_other_client": {"ext": map[string]any{"custos_prv": prv}, "client_id": "evil-app"},
		"prv_later_exp":        {"custos_prv": prv, "exp": exp + 1},
		"prv_as_jti":           {"jti": prv},
		"jti_as_prv":           {"custos_prv": "jti-0123456789", "jti": nil},
		"no_id":                {"jti": nil},
	} {
		t.Run(name, func(t *testing.T) {
			res := f.check(f.idp.sign(t, "ed", f.claims(change)))
			if res.Reason != event.ReasonNotIssued {
				t.Fatalf("reason %q, want not_issued", res.Reason)
			}
		})
	}
	// An earlier exp than recorded is a token the record covers.
	if res := f.check(f.idp.sign(t, "ed", f.claims(map[string]any{"exp": exp - 60}))); !res.Good() {
		t.Fatalf("a token expiring before its record is refused: %+v", res)
	}
}

// Signature and claim failures come before provenance, with the same
// reasons as custos's own tokens.
func TestSignatureAndClaims(t *testing.T) {
	f := newFixture(t, provider.Webhook)
	c := f.claims(nil)
	f.record(t, rec("jti-0123456789", c["exp"].(int64)))
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
	hsTok, _ := jwt.Signed(hs).Claims(c).Serialize()
	for name, tc := range map[string]struct {
		raw  string
		want event.Reason
	}{
		"other_key_same_kid": {signWith(t, other, jose.EdDSA, "ed", c), event.ReasonBadSignature},
		"other_alg_for_kid":  {signWith(t, otherEC, jose.ES256, "ed", c), event.ReasonBadSignature},
		"unknown_kid":        {signWith(t, other, jose.EdDSA, "nope", c), event.ReasonUnknownKey},
		"hs256":              {hsTok, event.ReasonMalformed},
		"expired":            {f.idp.sign(t, "ed", f.claims(map[string]any{"exp": time.Now().Unix() - 120})), event.ReasonExpired},
		"future_iat":         {f.idp.sign(t, "ed", f.claims(map[string]any{"iat": time.Now().Unix() + 600})), event.ReasonNotYetValid},
		"wrong_aud":          {f.idp.sign(t, "ed", f.claims(map[string]any{"aud": "other-api"})), event.ReasonWrongAudience},
		"no_sub":             {f.idp.sign(t, "ed", f.claims(map[string]any{"sub": nil})), event.ReasonMalformed},
		"no_client":          {f.idp.sign(t, "ed", f.claims(map[string]any{"client_id": nil})), event.ReasonMalformed},
		"two_prvs":           {f.idp.sign(t, "ed", f.claims(map[string]any{"custos_prv": "prv_aaaaaaaa", "ext": map[string]any{"custos_prv": "prv_bbbbbbbb"}})), event.ReasonMalformed},
		"dup_sub_case":       {dupSub(t, f), event.ReasonMalformed},
		"mtls_cnf":           {f.idp.sign(t, "ed", f.claims(map[string]any{"cnf": map[string]any{"x5t#S256": "abc"}})), event.ReasonMalformed},
	} {
		t.Run(name, func(t *testing.T) {
			if r := f.check(tc.raw); r.Reason != tc.want {
				t.Fatalf("reason %q, want %q", r.Reason, tc.want)
			}
		})
	}
	// A token of an issuer that is neither custos nor a provider stays
	// with custos's checks (unknown_key here: its kid is none of custos's).
	stranger := f.claims(map[string]any{"iss": "https://stranger.test/"})
	if r := f.check(f.idp.sign(t, "ed", stranger)); r.Good() || r.Reason == "" {
		t.Fatalf("a stranger's token passed: %+v", r)
	}
}

// Records are idempotent on (iss, id) with equal fields; other fields
// conflict; bad records are refused before the ledger is touched.
func TestRecorder(t *testing.T) {
	f := newFixture(t, provider.Webhook)
	exp := time.Now().Add(5 * time.Minute).Unix()
	r := rec("jti-idem-0001", exp)
	ctx := context.Background()
	if created, err := f.rec.Record(ctx, f.cfg, r); err != nil || !created {
		t.Fatalf("first record: %v %v", created, err)
	}
	if created, err := f.rec.Record(ctx, f.cfg, r); err != nil || created {
		t.Fatalf("repeat: %v %v", created, err)
	}
	other := r
	other.Subject = "member-2002"
	if _, err := f.rec.Record(ctx, f.cfg, other); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("other sub: %v, want ErrConflict", err)
	}
	later := r
	later.Exp = later.Exp.Add(time.Minute)
	if _, err := f.rec.Record(ctx, f.cfg, later); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("later exp: %v, want ErrConflict", err)
	}
	for name, bad := range map[string]func(*provider.Record){
		"other_iss":    func(r *provider.Record) { r.Issuer = "https://other.test/" },
		"short_id":     func(r *provider.Record) { r.JTI = "abc" },
		"past_exp":     func(r *provider.Record) { r.Exp = time.Now().Add(-time.Second) },
		"far_exp":      func(r *provider.Record) { r.Exp = time.Now().Add(25 * time.Hour) },
		"no_aud":       func(r *provider.Record) { r.Audience = nil },
		"space_sub":    func(r *provider.Record) { r.Subject = "a b" },
		"empty_client": func(r *provider.Record) { r.ClientID = "" },
	} {
		t.Run(name, func(t *testing.T) {
			x := rec("jti-bad-"+name, exp)
			bad(&x)
			if _, err := f.rec.Record(ctx, f.cfg, x); !errors.Is(err, provider.ErrInvalid) {
				t.Fatalf("err %v, want ErrInvalid", err)
			}
		})
	}
}

// A ledger that cannot record fails the record, so a hook can refuse.
func TestRecorderFailsClosed(t *testing.T) {
	f := newFixture(t, provider.Webhook)
	f.led.Close()
	_, err := f.rec.Record(context.Background(), f.cfg, rec("jti-closed-01", time.Now().Add(time.Minute).Unix()))
	if !errors.Is(err, provider.ErrUnavailable) {
		t.Fatalf("err %v, want ErrUnavailable", err)
	}
}

// Keycloak records bind no audience (its events carry none): the token's
// aud must still name the configured audience.
func TestKeycloakBindsNoAudience(t *testing.T) {
	f := newFixture(t, provider.Keycloak)
	body := `{"time":` + itoa(time.Now().UnixMilli()) + `,"type":"CLIENT_LOGIN","realmId":"shop","clientId":"shop-web","userId":"member-1001","ipAddress":"203.0.113.9","details":{"token_id":"kc-jti-0001","grant_type":"client_credentials"}}`
	ev, err := provider.ParseKeycloakEvent([]byte(body))
	if err != nil || !ev.Issues() {
		t.Fatalf("%v %+v", err, ev)
	}
	f.record(t, ev.Record(f.cfg))
	c := f.claims(map[string]any{"jti": "kc-jti-0001", "client_id": nil, "azp": "shop-web", "aud": []string{"shop-api", "account"},
		"exp": time.Now().Add(10 * time.Minute).Unix()})
	if r := f.check(f.idp.sign(t, "rs", c)); !r.Good() {
		t.Fatalf("recorded keycloak token refused: %+v", r)
	}
	c["exp"] = time.Now().Add(20 * time.Minute).Unix()
	if r := f.check(f.idp.sign(t, "rs", c)); r.Reason != event.ReasonNotIssued {
		t.Fatalf("exp past lifespan: %q, want not_issued", r.Reason)
	}
	c["exp"] = time.Now().Add(5 * time.Minute).Unix()
	c["aud"] = "account"
	if r := f.check(f.idp.sign(t, "rs", c)); r.Reason != event.ReasonWrongAudience {
		t.Fatalf("aud without the configured one: %q, want wrong_audience", r.Reason)
	}
}

// The key set is fetched once and cached; an unknown kid fetches again at
// most every 10 s, so made-up kids cannot make custos hammer the provider.
func TestKeysCached(t *testing.T) {
	f := newFixture(t, provider.Webhook)
	c := f.claims(nil)
	for range 5 {
		f.check(f.idp.sign(t, "ed", c))
	}
	if n := f.idp.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for one kid, want 1", n)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	for range 5 {
		f.check(signWith(t, other, jose.EdDSA, "made-up", c))
	}
	if n := f.idp.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches after made-up kids within 10 s, want still 1", n)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// dupSub signs a payload naming sub twice, in two letter cases, that is
// otherwise the recorded token: encoding/json alone would read it as that.
func dupSub(t *testing.T, f *fixture) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: f.idp.keys["ed"], KeyID: "ed"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := f.claims(nil)
	payload := fmt.Sprintf(`{"iss":%q,"SUB":"member-2002","sub":"member-1001","aud":["shop-api","account"],"client_id":"shop-web","exp":%d,"jti":"jti-0123456789"}`, iss, c["exp"])
	jws, err := s.Sign([]byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := jws.CompactSerialize()
	return raw
}
