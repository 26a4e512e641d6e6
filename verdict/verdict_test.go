package verdict_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
	"github.com/custos-dev/custos/verdict"
)

var t0 = time.Unix(1_750_000_000, 0)

type keySet struct {
	mu sync.Mutex
	m  map[string]keys.Key
}

func (k *keySet) Lookup(kid string) (keys.Key, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[kid]
	return v, ok
}

// led is one ledger both sides read: the authority's records and the
// gateway's provenance.
type led struct {
	mu   sync.Mutex
	m    map[ledger.Hash]ledger.Entry
	down bool
}

func (l *led) Put(_ context.Context, e ledger.Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[e.Hash] = e
	return nil
}

func (l *led) Get(_ context.Context, h ledger.Hash) (ledger.Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return ledger.Entry{}, ledger.ErrUnavailable
	}
	e, ok := l.m[h]
	if !ok {
		return e, ledger.ErrNotFound
	}
	return e, nil
}

func (l *led) Revoke(_ context.Context, h ledger.Hash) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[h]
	e.Revoked = true
	l.m[h] = e
	return nil
}

func (l *led) Status(ctx context.Context, h ledger.Hash) (ledger.Status, error) {
	e, err := l.Get(ctx, h)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return ledger.Unknown, nil
	case err != nil:
		return ledger.Unknown, err
	case e.Revoked:
		return ledger.Revoked, nil
	}
	return ledger.Live, nil
}

type world struct {
	ks   *keySet
	l    *led
	priv ed25519.PrivateKey
	gw   http.Handler
	auth *authority.Authority
	rs   *authority.Client
	now  time.Time
}

func newWorld(t *testing.T) *world {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	w := &world{
		ks:   &keySet{m: map[string]keys.Key{"k1": {KID: "k1", Alg: keys.EdDSA, State: keys.Active, Public: priv.Public()}}},
		l:    &led{m: map[ledger.Hash]ledger.Entry{}},
		priv: priv, now: t0,
		rs: &authority.Client{ID: "cl_rs", Audiences: []string{"shop-api"}},
	}
	clock := func() time.Time { return w.now }
	g, err := gateway.New(gateway.Config{Issuer: "https://custos.test", Audience: gateway.Audiences{"shop-api"}}, w.ks, w.l, nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	w.gw = g.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	w.auth, err = authority.New(authority.Config{Issuer: "https://custos.test", MaxTTL: 15 * time.Minute}, authSigner{w}, w.l, nil, nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

type authSigner struct{ w *world }

func (a authSigner) Signer(context.Context) (keys.Key, crypto.Signer, error) {
	k, _ := a.w.ks.Lookup("k1")
	return k, a.w.priv, nil
}

func (a authSigner) Lookup(kid string) (keys.Key, bool) { return a.w.ks.Lookup(kid) }

func (w *world) sign(t *testing.T, priv ed25519.PrivateKey, kid string, edit func(*token.Claims)) string {
	t.Helper()
	c := token.Claims{Issuer: "https://custos.test", Subject: "m-1", Audience: "shop-api",
		IssuedAt: t0.Unix() - 10, NotBefore: t0.Unix() - 10, ExpiresAt: t0.Unix() + 300, JTI: "j", ClientID: "cl_login"}
	if edit != nil {
		edit(&c)
	}
	raw, err := token.Sign(priv, keys.EdDSA, kid, c)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (w *world) record(raw string) {
	p, _ := token.Parse(raw)
	_ = w.l.Put(context.Background(), ledger.Entry{Hash: ledger.HashToken(raw), JTI: p.Claims.JTI, KID: p.Header.KID,
		Subject: p.Claims.Subject, ExpiresAt: time.Unix(p.Claims.ExpiresAt, 0)})
}

// gateway runs raw through the gateway middleware and returns its reason
// ("" for an allowed request).
func (w *world) gateway(raw string) event.Reason { return w.gatewayDPoP(raw, "Bearer", "") }

// Every reason of the token verdict, each reached on a token built for it;
// the gateway, the authority's verdict and RFC 7662 introspection agree on
// each at the same moment.
func TestGatewayAndIntrospectionAgree(t *testing.T) {
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name string
		prep func(t *testing.T, w *world) string
		want event.Reason
	}{
		{"ok/issued", func(t *testing.T, w *world) string { r := w.sign(t, w.priv, "k1", nil); w.record(r); return r }, ""},
		{"ok/expired-within-leeway", func(t *testing.T, w *world) string {
			r := w.sign(t, w.priv, "k1", func(c *token.Claims) { c.ExpiresAt = t0.Unix() - 10 })
			w.record(r)
			return r
		}, ""},
		{"ok/verify-only-key", func(t *testing.T, w *world) string {
			r := w.sign(t, w.priv, "k1", nil)
			w.record(r)
			w.setState(keys.VerifyOnly)
			return r
		}, ""},
		{"fail/malformed", func(*testing.T, *world) string { return "not-a-token" }, event.ReasonMalformed},
		{"fail/malformed-two-parts", func(*testing.T, *world) string { return "eyJhbGciOiJFZERTQSJ9.e30" }, event.ReasonMalformed},
		{"fail/unknown_key", func(t *testing.T, w *world) string { return w.sign(t, w.priv, "k9", nil) }, event.ReasonUnknownKey},
		{"fail/unknown_key-empty-kid", func(t *testing.T, w *world) string { return w.sign(t, w.priv, "", nil) }, event.ReasonUnknownKey},
		{"fail/bad_signature", func(t *testing.T, w *world) string { r := w.sign(t, stranger, "k1", nil); w.record(r); return r }, event.ReasonBadSignature},
		{"fail/revoked_key", func(t *testing.T, w *world) string {
			r := w.sign(t, w.priv, "k1", nil)
			w.record(r)
			w.setState(keys.Revoked)
			return r
		}, event.ReasonRevokedKey},
		{"fail/revoked_key-after-cached", func(t *testing.T, w *world) string {
			r := w.sign(t, w.priv, "k1", nil)
			w.record(r)
			if got := w.gateway(r); got != "" { // verified and cached while the key was good
				t.Fatalf("before revocation: %q", got)
			}
			w.setState(keys.Revoked)
			return r
		}, event.ReasonRevokedKey},
		{"fail/retired_key", func(t *testing.T, w *world) string {
			r := w.sign(t, w.priv, "k1", nil)
			w.record(r)
			w.setState(keys.Retired)
			return r
		}, event.ReasonRevokedKey},
		{"fail/expired", func(t *testing.T, w *world) string {
			r := w.sign(t, w.priv, "k1", func(c *token.Claims) { c.ExpiresAt = t0.Unix() - 31 })
			w.record(r)
			return r
		}, event.ReasonExpired},
		{"fail/expired-later", func(t *testing.T, w *world) string {
			r := w.sign(t, w.priv, "k1", nil)
			w.record(r)
			w.now = t0.Add(301*time.Second + verdict.DefaultLeeway)
			return r
		}, event.ReasonExpired},
		{"fail/not_yet_valid-nbf", func(t *testing.T, w *world) string {
			r := w.sign(t, w.priv, "k1", func(c *token.Claims) { c.NotBefore = t0.Unix() + 31 })
			w.record(r)
			return r
		}, event.ReasonNotYetValid},
		{"fail/not_yet_valid-iat", func(t *testing.T, w *world) string {
			r := w.sign(t, w.priv, "k1", func(c *token.Claims) { c.IssuedAt = t0.Unix() + 120 })
			w.record(r)
			return r
		}, event.ReasonNotYetValid},
		{"fail/wrong_issuer", func(t *testing.T, w *world) string {
			r := w.sign(t, w.priv, "k1", func(c *token.Claims) { c.Issuer = "https://custos.test/" })
			w.record(r)
			return r
		}, event.ReasonWrongIssuer},
		{"fail/wrong_audience", func(t *testing.T, w *world) string {
			r := w.sign(t, w.priv, "k1", func(c *token.Claims) { c.Audience = "SHOP-API" })
			w.record(r)
			return r
		}, event.ReasonWrongAudience},
		{"fail/not_issued", func(t *testing.T, w *world) string { return w.sign(t, w.priv, "k1", nil) }, event.ReasonNotIssued},
		{"fail/revoked_token", func(t *testing.T, w *world) string {
			r := w.sign(t, w.priv, "k1", nil)
			w.record(r)
			_ = w.l.Revoke(context.Background(), ledger.HashToken(r))
			return r
		}, event.ReasonRevokedToken},
		{"fail/ledger_unavailable", func(t *testing.T, w *world) string {
			r := w.sign(t, w.priv, "k1", nil)
			w.record(r)
			w.l.down = true
			return r
		}, event.ReasonLedgerUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			raw := tc.prep(t, w)
			ctx := context.Background()
			if got := w.gateway(raw); got != tc.want {
				t.Errorf("gateway %q, want %q", got, tc.want)
			}
			if v := w.auth.Verdict(ctx, w.rs, raw); v.Reason != tc.want {
				t.Errorf("authority verdict %q, want %q", v.Reason, tc.want)
			}
			in, err := w.auth.Introspect(ctx, w.rs, raw)
			if tc.want == event.ReasonLedgerUnavailable {
				if err == nil || in.Active {
					t.Errorf("introspection with the ledger down: %+v, %v", in, err)
				}
				return
			}
			if err != nil || in.Active != (tc.want == "") {
				t.Errorf("introspection active=%v err=%v, want active=%v", in.Active, err, tc.want == "")
			}
		})
	}
}

// A resource server learns nothing about a token for another audience:
// introspection by a client registered for billing-api answers inactive,
// as a gateway for billing-api would refuse it.
func TestIntrospectionAudienceOfCaller(t *testing.T) {
	w := newWorld(t)
	raw := w.sign(t, w.priv, "k1", nil)
	w.record(raw)
	ctx := context.Background()
	other := &authority.Client{ID: "cl_billing", Audiences: []string{"billing-api"}}
	if in, err := w.auth.Introspect(ctx, other, raw); err != nil || in.Active {
		t.Fatalf("other audience: %+v %v", in, err)
	}
	if v := w.auth.Verdict(ctx, other, raw); v.Reason != event.ReasonWrongAudience {
		t.Fatalf("verdict %q", v.Reason)
	}
	if in, err := w.auth.Introspect(ctx, w.rs, raw); err != nil || !in.Active || in.Sub != "m-1" {
		t.Fatalf("own audience: %+v %v", in, err)
	}
}

func (w *world) setState(s keys.State) {
	w.ks.mu.Lock()
	k := w.ks.m["k1"]
	k.State = s
	w.ks.m["k1"] = k
	w.ks.mu.Unlock()
}
