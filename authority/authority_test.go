package authority

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/store"
	"github.com/custos-dev/custos/token"
	"github.com/custos-dev/custos/verdict"
	"github.com/custos-dev/custos/wire"
)

type fakeSigner struct {
	key  keys.Key
	priv ed25519.PrivateKey
	err  error
}

func newFakeSigner() *fakeSigner {
	pub, priv, _ := ed25519.GenerateKey(nil)
	return &fakeSigner{key: keys.Key{KID: "k1", Alg: keys.EdDSA, State: keys.Active, Public: pub}, priv: priv}
}

func (f *fakeSigner) Signer(ctx context.Context) (keys.Key, crypto.Signer, error) {
	return f.key, f.priv, f.err
}

func (f *fakeSigner) Lookup(kid string) (keys.Key, bool) {
	return f.key, kid == f.key.KID
}

type fakeLedger struct {
	mu   sync.Mutex
	m    map[ledger.Hash]ledger.Entry
	fail error
}

func (l *fakeLedger) Put(ctx context.Context, e ledger.Entry) error {
	if l.fail != nil {
		return l.fail
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[e.Hash] = e
	return nil
}

func (l *fakeLedger) Get(ctx context.Context, h ledger.Hash) (ledger.Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[h]
	if !ok {
		return e, ledger.ErrNotFound
	}
	return e, nil
}

func (l *fakeLedger) Revoke(ctx context.Context, h ledger.Hash) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[h]
	e.Revoked = true
	l.m[h] = e
	return nil
}

type recAlerts struct{ rules []string }

func (r *recAlerts) Raise(ctx context.Context, rule, severity, entity, summary string) {
	r.rules = append(r.rules, rule+"/"+severity+"/"+entity)
}

type fixture struct {
	auth   *Authority
	creds  *Credentials
	led    *fakeLedger
	sig    *fakeSigner
	alerts *recAlerts
	client *Client
	secret string
	srv    *httptest.Server
	now    time.Time
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ctx := context.Background()
	db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{led: &fakeLedger{m: map[ledger.Hash]ledger.Entry{}}, sig: newFakeSigner(), alerts: &recAlerts{}, now: time.Unix(1_750_000_000, 0)}
	clock := func() time.Time { return f.now }
	f.creds, err = OpenCredentials(ctx, db, clock)
	if err != nil {
		t.Fatal(err)
	}
	f.auth, err = New(Config{Issuer: "https://custos.test", MaxTTL: 15 * time.Minute, Decoys: []string{"999999"}}, f.sig, f.led, f.alerts, nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	c, sec, err := f.creds.AddClient(ctx, "login", []string{"shop-api"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	f.client, f.secret = &c, sec
	mux := http.NewServeMux()
	(&Handler{Auth: f.auth, Creds: f.creds}).Register(mux)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func TestIssueRecordsInLedgerAndVerifies(t *testing.T) {
	f := newFixture(t)
	out, err := f.auth.Issue(context.Background(), f.client, Request{Subject: "1001", Audience: "shop-api", SessionID: "s1", ClientIP: "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	e, err := f.led.Get(context.Background(), ledger.HashToken(out.AccessToken))
	if err != nil {
		t.Fatalf("issued token not in ledger: %v", err)
	}
	if e.Subject != "1001" || e.JTI != out.JTI || e.KID != "k1" || e.Client != f.client.ID || e.Session != "s1" {
		t.Fatalf("ledger entry %+v does not match", e)
	}
	if got := e.ExpiresAt.Sub(e.IssuedAt); got != DefaultTTL {
		t.Fatalf("ttl %s, want %s", got, DefaultTTL)
	}
	p, err := token.Parse(out.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if err := token.VerifySignature(p, keys.EdDSA, f.sig.key.Public); err != nil {
		t.Fatalf("signature: %v", err)
	}
	if p.Header.Typ != "at+jwt" || p.Header.KID != "k1" {
		t.Fatalf("header %+v", p.Header)
	}
	c := p.Claims
	if c.Issuer != "https://custos.test" || c.Subject != "1001" || c.Audience != "shop-api" || c.ClientID != f.client.ID || c.SessionID != "s1" || len(c.JTI) != 22 {
		t.Fatalf("claims %+v", c)
	}
}

func TestIssueInputRules(t *testing.T) {
	f := newFixture(t)
	long := strings.Repeat("a", MaxSubjectBytes+1)
	for name, tc := range map[string]struct {
		req  Request
		code string
	}{
		"fail/empty_subject":    {Request{Audience: "shop-api"}, "invalid_request"},
		"fail/long_subject":     {Request{Subject: long, Audience: "shop-api"}, "invalid_request"},
		"fail/control_subject":  {Request{Subject: "10\n01", Audience: "shop-api"}, "invalid_request"},
		"fail/ttl_over_max":     {Request{Subject: "1", Audience: "shop-api", TTL: 16 * 60}, "invalid_request"},
		"fail/negative_ttl":     {Request{Subject: "1", Audience: "shop-api", TTL: -1}, "invalid_request"},
		"fail/bad_client_ip":    {Request{Subject: "1", Audience: "shop-api", ClientIP: "nope"}, "invalid_request"},
		"fail/unregistered_aud": {Request{Subject: "1", Audience: "admin-api"}, "unauthorized_client"},
		"fail/decoy":            {Request{Subject: "999999", Audience: "shop-api"}, "access_denied"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.auth.Issue(context.Background(), f.client, tc.req)
			var ae *Error
			if !errors.As(err, &ae) || ae.Code != tc.code {
				t.Fatalf("err %v, want code %s", err, tc.code)
			}
			if len(f.led.m) != 0 {
				t.Fatalf("a refused request wrote %d ledger entries", len(f.led.m))
			}
		})
	}
	if len(f.alerts.rules) != 1 || !strings.Contains(f.alerts.rules[0], "critical/subject:999999") {
		t.Fatalf("decoy issuance raised %v, want one critical alert", f.alerts.rules)
	}
}

func TestLedgerFailureHandsOutNothing(t *testing.T) {
	f := newFixture(t)
	f.led.fail = errors.New("disk full")
	out, err := f.auth.Issue(context.Background(), f.client, Request{Subject: "1", Audience: "shop-api"})
	if err == nil || out.AccessToken != "" {
		t.Fatalf("issued %q with a failing ledger", out.AccessToken)
	}
}

func TestIntrospectForgedTokenIsInactive(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// Signed with the real key but never issued: the stolen-key case.
	forged, err := token.Sign(f.sig.priv, keys.EdDSA, "k1", token.Claims{Issuer: "https://custos.test", Subject: "42", Audience: "shop-api",
		IssuedAt: f.now.Unix(), NotBefore: f.now.Unix(), ExpiresAt: f.now.Add(time.Minute).Unix(), JTI: "forged", ClientID: f.client.ID})
	if err != nil {
		t.Fatal(err)
	}
	in, err := f.auth.Introspect(ctx, f.client, forged)
	if err != nil || in.Active {
		t.Fatalf("forged token introspects active=%v err=%v", in.Active, err)
	}
	out, _ := f.auth.Issue(ctx, f.client, Request{Subject: "42", Audience: "shop-api"})
	in, err = f.auth.Introspect(ctx, f.client, out.AccessToken)
	if err != nil || !in.Active || in.Sub != "42" {
		t.Fatalf("issued token introspects %+v err=%v", in, err)
	}
	if err := f.auth.Revoke(ctx, f.client, out.AccessToken); err != nil {
		t.Fatal(err)
	}
	if in, _ := f.auth.Introspect(ctx, f.client, out.AccessToken); in.Active {
		t.Fatal("revoked token still active")
	}
	f.now = f.now.Add(time.Hour)
	out2, _ := f.auth.Issue(ctx, f.client, Request{Subject: "43", Audience: "shop-api", TTL: 60})
	f.now = f.now.Add(60*time.Second + verdict.DefaultLeeway)
	if in, _ := f.auth.Introspect(ctx, f.client, out2.AccessToken); in.Active {
		t.Fatal("expired token still active")
	}
}

func TestHTTPIssue(t *testing.T) {
	f := newFixture(t)
	post := func(auth, body string) (*http.Response, string) {
		req, _ := http.NewRequest("POST", f.srv.URL+"/v1/tokens", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			sb.Write(buf[:n])
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		return resp, sb.String()
	}
	for name, tc := range map[string]struct {
		auth, body string
		status     int
		want       string
	}{
		"ok/issue":           {f.secret, `{"subject":"7","audience":"shop-api","ttl":60}`, 200, `"token_type":"Bearer"`},
		"fail/no_client":     {"", `{"subject":"7","audience":"shop-api"}`, 401, `"invalid_client"`},
		"fail/wrong_secret":  {"cs_nope", `{"subject":"7","audience":"shop-api"}`, 401, `"invalid_client"`},
		"fail/unknown_field": {f.secret, `{"subject":"7","audience":"shop-api","admin":true}`, 400, `"invalid_request"`},
		"fail/trailing":      {f.secret, `{"subject":"7","audience":"shop-api"} {}`, 400, `"invalid_request"`},
		"fail/not_json":      {f.secret, `subject=7`, 400, `"invalid_request"`},
		"fail/huge":          {f.secret, `{"subject":"` + strings.Repeat("x", wire.MaxBody) + `"}`, 400, `"invalid_request"`},
		"fail/audience":      {f.secret, `{"subject":"7","audience":"other"}`, 403, `"unauthorized_client"`},
		"fail/decoy":         {f.secret, `{"subject":"999999","audience":"shop-api"}`, 403, `"access_denied"`},
	} {
		t.Run(name, func(t *testing.T) {
			before := len(f.led.m)
			resp, body := post(tc.auth, tc.body)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, body, tc.status, tc.want)
			}
			if tc.status != 200 && len(f.led.m) != before {
				t.Fatal("a refused request wrote to the ledger")
			}
			if tc.status != 200 && !strings.Contains(body, `"error_description"`) {
				t.Fatalf("error body %s lacks error_description", body)
			}
		})
	}
}

func TestRevokeHeldBy(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, adminTok, err := f.creds.AddAdmin(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	n, err := f.creds.RevokeHeldBy(ctx, "alice", "custos/offboarding", "left")
	if err != nil || n != 2 {
		t.Fatalf("revoked %d (%v), want client + admin = 2", n, err)
	}
	if _, err := f.creds.Client(f.secret); !errors.Is(err, ErrBadCredential) {
		t.Fatal("departed custodian's client secret still works")
	}
	if _, err := f.creds.Admin(adminTok); !errors.Is(err, ErrBadCredential) {
		t.Fatal("departed custodian's admin credential still works")
	}
	// And after a restart.
	c2, err := OpenCredentials(ctx, f.creds.db, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Client(f.secret); err == nil {
		t.Fatal("revoked client secret reloaded as live")
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"subject":"1","audience":"a","ttl":60,"client_ip":"1.2.3.4","session_id":"s"}`))
	f.Add([]byte(`{"subject":"1","subject":"2"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Request
		if err := wire.Unmarshal(b, &r); err != nil {
			return
		}
		a := &Authority{MaxTTL: 15 * time.Minute}
		if err := a.Validate(&Client{Audiences: []string{"a"}}, &r); err == nil {
			if token.CheckSubject(r.Subject) != nil || r.Audience != "a" || r.TTL < 0 || r.TTL > 900 {
				t.Fatalf("accepted invalid request %+v", r)
			}
		}
	})
}

type logins struct{ sids []string }

func (l *logins) Login(sid string, at time.Time) { l.sids = append(l.sids, sid) }

func TestIssueReportsLogin(t *testing.T) {
	f := newFixture(t)
	rec := &logins{}
	f.auth.Logins = rec
	out, err := f.auth.Issue(context.Background(), f.client, Request{Subject: "5", Audience: "shop-api"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.sids) != 1 || rec.sids[0] != out.JTI {
		t.Fatalf("logins %v, want [%s]", rec.sids, out.JTI)
	}
	if _, err := f.auth.Issue(context.Background(), f.client, Request{Subject: "", Audience: "shop-api"}); err == nil || len(rec.sids) != 1 {
		t.Fatal("a refused request was reported as a login")
	}
}
