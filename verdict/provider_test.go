package verdict_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-dev/custos/token"
	"github.com/custos-dev/custos/verdict"
)

// offered is a Providers that knows no issuer and counts the tokens
// offered to it.
type offered struct{ n atomic.Int32 }

func (o *offered) Verify(context.Context, string, time.Time) (verdict.ProviderToken, bool) {
	o.n.Add(1)
	return verdict.ProviderToken{}, false
}

func (o *offered) Holds(context.Context, *verdict.ProviderKey) bool { return false }

// custos's own tokens (its iss) are never offered to the providers, cold
// or warm, whatever their verdict; a token of another issuer is.
func TestCustosTokensNotOfferedToProviders(t *testing.T) {
	w := newWorld(t)
	o := &offered{}
	c := verdict.Checker{Keys: w.ks, Ledger: w.l, Cache: verdict.NewCache(10), Providers: o}
	pol := &verdict.Policy{Issuer: "https://custos.test", Audience: []string{"shop-api"}, Leeway: 30 * time.Second}
	good := w.sign(t, w.priv, "k1", nil)
	w.record(good)
	unrecorded := w.sign(t, w.priv, "k1", func(c *token.Claims) { c.JTI = "other" })
	unknownKey := w.sign(t, w.priv, "k9", nil)
	for _, raw := range []string{good, good, unrecorded, unknownKey} {
		c.Check(context.Background(), raw, pol, t0, nil)
	}
	if r := c.Check(context.Background(), good, pol, t0, nil); !r.Good() || !r.Cached {
		t.Fatalf("custos token: %+v", r)
	}
	if n := o.n.Load(); n != 0 {
		t.Fatalf("custos's tokens offered to the providers %d times", n)
	}
	stranger := w.sign(t, w.priv, "k1", func(c *token.Claims) { c.Issuer = "https://idp.test/" })
	c.Check(context.Background(), stranger, pol, t0, nil)
	if n := o.n.Load(); n != 1 {
		t.Fatalf("a token of another issuer offered %d times, want 1", n)
	}
}
