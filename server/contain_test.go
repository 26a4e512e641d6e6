package server_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

// Containment actions take effect at the gateway: a token revoked by jti, a
// subject forced to log in again, a blocked source.
func TestContainmentActions(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	c := e.S.Containment()
	secret := e.Client(t)
	m1, m2 := e.Member(1), e.Member(2)
	t1, t2, t3 := e.Issue(t, secret, m1), e.Issue(t, secret, m2), e.Issue(t, secret, m2)
	p, err := token.Parse(t1)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RevokeToken(ctx, p.Claims.JTI, "alert"); err != nil {
		t.Fatal(err)
	}
	if st, reason := e.Get(t, t1, "/api/members/"+m1+"/profile"); st != 401 || reason != string(event.ReasonRevokedToken) {
		t.Fatalf("token revoked by jti: %d %s", st, reason)
	}
	if err := c.ForceRelogin(ctx, m2, "alert"); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{t2, t3} {
		if st, reason := e.Get(t, tok, "/api/members/"+m2+"/profile"); st != 401 || reason != string(event.ReasonRevokedToken) {
			t.Fatalf("token of a subject forced to log in again: %d %s", st, reason)
		}
	}
	if st, _ := e.Get(t, e.Issue(t, secret, m2), "/api/members/"+m2+"/profile"); st != 200 {
		t.Fatalf("a fresh login after force_relogin: %d", st)
	}
	if err := c.BlockSource(ctx, netip.MustParsePrefix("127.0.0.0/8"), time.Now().Add(time.Minute), "alert"); err != nil {
		t.Fatal(err)
	}
	if st, reason := e.Get(t, e.Issue(t, secret, m1), "/api/members/"+m1+"/profile"); st != 401 || reason != string(event.ReasonBlockedSource) {
		t.Fatalf("blocked source: %d %s", st, reason)
	}
	if st, _ := e.S.Ledger.Status(ctx, ledger.HashToken(t1)); st != ledger.Revoked {
		t.Fatalf("ledger status of the revoked token: %v", st)
	}
}
