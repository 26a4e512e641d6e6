package server_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/internal/proctest"
	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/token"
)

// Containment actions take effect at the gateway: a token revoked by jti, a
// subject forced to log in again, a blocked source; on either ledger
// backend (the Redis one in a database no other test here uses, since the
// members' subjects are the same in every test).
func TestContainmentActions(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { containmentActions(t, start(t)) })
	t.Run("redis", func(t *testing.T) {
		rc := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:6379", DB: 6})
		defer rc.Close()
		testenv.Require(t, "Redis at 127.0.0.1:6379", rc.Ping(context.Background()).Err())
		containmentActions(t, startWith(t, func(c *config.Config) { c.Scale.Redis = "redis://127.0.0.1:6379/6" }))
	})
	t.Run("redis-sharded", func(t *testing.T) {
		a, b := privateRedis(t), privateRedis(t)
		e := startWith(t, func(c *config.Config) { c.Scale.Redis = a + "," + b })
		for i, u := range []string{a, b} {
			opt, _ := goredis.ParseURL(u)
			rc := goredis.NewClient(opt)
			defer rc.Close()
			if got, want := rc.Get(context.Background(), "custos:ledger-shard").Val(), fmt.Sprintf("%d/2", i); got != want {
				t.Fatalf("shard %d's marker %q, want %q: the server did not shard its ledger", i, got, want)
			}
		}
		containmentActions(t, e)
	})
}

// privateRedis starts a redis-server of the test's own on a free loopback
// port, keeping nothing on disk, and returns its URL.
func privateRedis(t *testing.T) string {
	t.Helper()
	_, err := exec.LookPath("redis-server")
	testenv.Require(t, "redis-server binary", err)
	port := strconv.Itoa(proctest.FreePort(t))
	cmd := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port, "--dir", t.TempDir(), "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			return "redis://127.0.0.1:" + port + "/0"
		}
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not start")
		}
	}
}

func containmentActions(t *testing.T, e *env) {
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

// keyState is the state of kid at the authority.
func keyState(t *testing.T, e *env, kid string) keys.State {
	t.Helper()
	ks, err := e.S.Keys.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		if k.KID == kid {
			return k.State
		}
	}
	t.Fatalf("no key %s", kid)
	return ""
}

// With containment on, a customer with their own issued token who asks for
// decoy members (in several spellings of the path) does not get the signing
// key revoked: their token and sessions end and their address is blocked,
// each action naming its evidence; another customer's token stays live.
func TestContainmentProportionalToEvidence(t *testing.T) {
	e := startWith(t, func(c *config.Config) { c.Detect.Contain = true })
	ctx := context.Background()
	secret := e.Client(t)
	m1, m2 := e.Member(1), e.Member(2)
	decoy := e.Cfg.Decoys[0]
	t1, t1b, t2 := e.Issue(t, secret, m1), e.Issue(t, secret, m1), e.Issue(t, secret, m2)
	k, _, err := e.S.Keys.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/api/members/" + decoy + "/profile", "/api/members/" + decoy + "/addresses", "/api/members/" + decoy + "/profile"} {
		if st, reason := e.Get(t, t1, p); st != 401 || (reason != string(event.ReasonDecoySubject) && reason != string(event.ReasonRevokedToken) && reason != string(event.ReasonBlockedSource)) {
			t.Fatalf("decoy %s: %d %s", p, st, reason)
		}
	}
	var hold gateway.Hold
	deadline := time.Now().Add(10 * time.Second)
	for hold.ID == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no hold; actions %+v", e.S.Detect.Actions())
		}
		hs, err := e.S.Holds(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(hs) > 0 && len(e.S.Detect.Actions()) >= 4 {
			hold = hs[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	if hold.Target != "127.0.0.1/32" || hold.Rule != "decoy_subject" || hold.AlertID == "" || hold.Evidence["src_ip"] != "127.0.0.1" || hold.Evidence["token_sub"] != m1 ||
		hold.Until.After(time.Now().Add(e.Cfg.Detect.BlockFor)) {
		t.Fatalf("hold %+v", hold)
	}
	if st := keyState(t, e, k.KID); st != keys.Active {
		t.Fatalf("a decoy hit with an issued token left the key %s", st)
	}
	for _, tc := range []struct {
		tok  string
		want ledger.Status
	}{{t1, ledger.Revoked}, {t1b, ledger.Revoked}, {t2, ledger.Live}} {
		if st, _ := e.S.Ledger.Status(ctx, ledger.HashToken(tc.tok)); st != tc.want {
			t.Errorf("ledger status %v, want %v", st, tc.want)
		}
	}
	if st, reason := e.Get(t, t2, "/api/members/"+m2+"/profile"); st != 403 && st != 401 || reason != string(event.ReasonBlockedSource) && st == 401 {
		t.Errorf("request from the blocked source: %d %s", st, reason)
	}
	var refused bool
	for _, x := range e.S.Detect.Actions() {
		if x.AlertID == "" || x.Evidence["rule"] != "decoy_subject" {
			t.Errorf("action without evidence: %+v", x)
		}
		if x.Action == "revoke_key" {
			refused = x.Error != ""
		}
	}
	if !refused {
		t.Errorf("revoke_key not recorded as refused: %+v", e.S.Detect.Actions())
	}
}

// A token signed with the real key that the authority never issued is
// evidence against the key: containment revokes it.
func TestContainmentRevokesKeyOnNotIssued(t *testing.T) {
	e := startWith(t, func(c *config.Config) { c.Detect.Contain = true })
	ctx := context.Background()
	k, _, err := e.S.Keys.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st, reason := e.Get(t, e.Forge(t, e.Member(3), "forged-9"), "/api/members/"+e.Member(3)+"/profile"); st != 401 || reason != string(event.ReasonNotIssued) {
		t.Fatalf("forged: %d %s", st, reason)
	}
	deadline := time.Now().Add(10 * time.Second)
	for keyState(t, e, k.KID) != keys.Revoked {
		if time.Now().After(deadline) {
			t.Fatalf("key not revoked; actions %+v", e.S.Detect.Actions())
		}
		time.Sleep(20 * time.Millisecond)
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

// A block_country action becomes a hold, with its action id, alert, rule
// and evidence, that the in-process gateway applies; a hold on an allowed
// country is refused, whoever asks for it.
func TestContainmentBlocksCountry(t *testing.T) {
	e := startWith(t, func(c *config.Config) { c.Detect.Contain = true })
	ctx := context.Background()
	c, ok := e.S.Containment().(detect.RecordedContainment)
	if !ok {
		t.Fatal("the authority's containment takes no action records")
	}
	until := time.Now().Add(24 * time.Hour).UTC()
	r := detect.ActionRecord{ID: "act-al-1-block_country", Time: time.Now(), Action: detect.ActionBlockCountry, Target: "US", Until: until,
		Rule: detect.RuleForeignSpread, AlertID: "al-1", Reason: "custos alert al-1",
		Evidence: map[string]string{"rule": detect.RuleForeignSpread, "country": "US", "jti": "j1"}}
	if err := c.Carry(ctx, r); err != nil {
		t.Fatal(err)
	}
	hs, err := e.S.Holds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0].ID != r.ID || hs[0].Action != gateway.HoldBlockCountry || hs[0].Target != "US" || hs[0].AlertID != "al-1" ||
		hs[0].Rule != detect.RuleForeignSpread || hs[0].Evidence["country"] != "US" || !hs[0].Until.Equal(until) {
		t.Fatalf("holds %+v", hs)
	}
	if bs := e.S.Gateway.CountryBlocks(); len(bs) != 1 || bs[0].Country != "US" {
		t.Fatalf("in-process gateway country blocks %+v", bs)
	}
	home := r
	home.ID, home.Target = "act-al-2-block_country", "KR"
	if err := c.Carry(ctx, home); !errors.Is(err, server.ErrHomeCountry) {
		t.Fatalf("hold on the home country: %v", err)
	}
	if err := e.S.Containment().(detect.CountryBlocker).BlockCountry(ctx, "KR", until, "by hand"); !errors.Is(err, server.ErrHomeCountry) {
		t.Fatalf("hold on the home country: %v", err)
	}
	if hs, _ := e.S.Holds(ctx); len(hs) != 1 {
		t.Fatalf("holds after refusals %+v", hs)
	}
}
