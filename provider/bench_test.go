package provider_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/provider"
	"github.com/custos-dev/custos/token"
	"github.com/custos-dev/custos/verdict"
)

// BenchmarkCheck is the verdict on a recorded provider token, per
// algorithm: cold parses and verifies the signature and looks up the
// ledger index; warm finds the token in the verified-token cache, asks
// whether its key is still in the provider's set, and looks up the index.
// Run: go test -run XXX -bench Check ./provider
func BenchmarkCheck(b *testing.B) {
	f := newFixture(b, provider.Webhook)
	c := f.claims(nil)
	f.record(b, rec("jti-0123456789", c["exp"].(int64)))
	for _, kid := range []string{"ed", "ec", "rs"} {
		raw := f.idp.sign(b, kid, c)
		if r := f.check(raw); !r.Good() {
			b.Fatalf("%s: %+v", kid, r)
		}
		b.Run(kid+"/cold", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f.checker.Cache.Clear()
				f.check(raw)
			}
		})
		b.Run(kid+"/warm", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f.check(raw)
			}
		})
	}
}

// BenchmarkCustosCold is the cold verdict on custos's own token (Ed25519)
// with one provider configured, beside the same with none: custos's tokens
// are never offered to the providers, so the two should cost the same.
// Run: go test -run XXX -bench CustosCold -benchmem ./provider
func BenchmarkCustosCold(b *testing.B) {
	f := newFixture(b, provider.Webhook)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	ks := oneKey{keys.Key{KID: "k1", Alg: keys.EdDSA, State: keys.Active, Public: pub}}
	now := time.Now()
	raw, err := token.Sign(priv, keys.EdDSA, "k1", token.Claims{Issuer: f.pol.Issuer, Subject: "m-1", Audience: "shop-api",
		IssuedAt: now.Unix(), ExpiresAt: now.Unix() + 300, JTI: "j-1", ClientID: "cl_login"})
	if err != nil {
		b.Fatal(err)
	}
	if err := f.led.Put(context.Background(), ledger.Entry{Hash: ledger.HashToken(raw), JTI: "j-1", KID: "k1",
		Subject: "m-1", IssuedAt: now, ExpiresAt: now.Add(5 * time.Minute)}); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		prov verdict.Providers
	}{{"no_provider", nil}, {"one_provider", f.set}} {
		c := verdict.Checker{Keys: ks, Ledger: f.led, Cache: verdict.NewCache(100), Providers: tc.prov}
		if r := c.Check(context.Background(), raw, &f.pol, time.Now(), nil); !r.Good() {
			b.Fatalf("%s: %+v", tc.name, r)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.Cache.Clear()
				c.Check(context.Background(), raw, &f.pol, time.Now(), nil)
			}
		})
	}
}

type oneKey struct{ k keys.Key }

func (o oneKey) Lookup(kid string) (keys.Key, bool) { return o.k, kid == o.k.KID }
