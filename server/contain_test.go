package server_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/config"

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

// A stolen client secret asking the authority for tokens for member after
// member, with no login behind them: issuance detection alerts on the
// client and containment suspends its secret, which the authority then
// refuses; another client's secret still works.
func TestStolenClientSecretSuspended(t *testing.T) {
	e := startWith(t, func(c *config.Config) { c.Detect.Contain = true })
	ctx := context.Background()
	stolen := e.Client(t)
	var o struct {
		Secret string `json:"client_secret"`
	}
	if err := e.API.Do(ctx, "POST", "/v1/clients", map[string]any{"name": "partner", "audience": []string{config.DefaultAudience}}, &o); err != nil {
		t.Fatal(err)
	}
	other := o.Secret
	cl, err := e.S.Creds.Client(stolen)
	if err != nil {
		t.Fatal(err)
	}
	issued, refused := 0, 0
	for i := range 200 {
		var out struct {
			AccessToken string `json:"access_token"`
		}
		err := e.API.DoAuth(ctx, "POST", "/v1/tokens", stolen, map[string]any{"subject": e.Member(uint64(i + 1)), "audience": config.DefaultAudience}, &out)
		if err != nil {
			refused++
			if !strings.Contains(err.Error(), "401") {
				t.Fatalf("issuance %d refused with %v, want 401 invalid_client", i, err)
			}
			continue
		}
		if refused > 0 {
			t.Fatalf("issuance %d succeeded after a refusal", i)
		}
		issued++
		if issued > 25 {
			time.Sleep(authority.CacheTTL / 10) // the suspension reaches every cached lookup within CacheTTL
		}
	}
	var acts []string
	for _, a := range e.S.Detect.Actions() {
		acts = append(acts, string(a.Action)+" "+a.Target+" "+a.Rule+" "+a.Error)
	}
	if issued == 0 || issued > 40 || refused == 0 {
		t.Fatalf("issued %d, refused %d: want the secret suspended after the first alert; actions %v", issued, refused, acts)
	}
	if len(acts) == 0 || !strings.HasPrefix(acts[0], "suspend_client "+cl.ID+" issuance_") {
		t.Fatalf("actions %v, want suspend_client of %s", acts, cl.ID)
	}
	if tok := e.Issue(t, other, e.Member(1)); tok == "" {
		t.Fatal("another client's secret refused")
	}
}
