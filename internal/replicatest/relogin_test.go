package replicatest

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
)

// reloginDB is the Redis database of this test's ledger, which no other
// test uses: its subject index holds the members every deployment here
// shares (shop.Population seed), and a force_relogin must find only this
// deployment's tokens.
const reloginDB = 7

// A decoy hit on the Redis ledger revokes the customer's tokens wherever
// they were issued: the detector queues revoke_token and force_relogin,
// an authority finds the jti and the subject's tokens in Redis's indexes
// and revokes them, and every standalone gateway then refuses both the
// token of the hit (issued at a1) and the customer's token from a2,
// whatever address it comes from, while another customer is served. The
// customer logs in again and is served.
func TestDecoyHitRevokesSubjectTokensOnRedisLedger(t *testing.T) {
	d := newDeployment(t, direct)
	d.rdb = reloginDB
	t.Cleanup(func() {
		rc := goredis.NewClient(&goredis.Options{Addr: redisAddr, DB: reloginDB})
		rc.FlushDB(context.Background())
		rc.Close()
	})
	d.detect = "detect:\n  contain: true\n"
	a1, a2, _, cl := d.twoAuthorities()
	g1 := d.gateway("g1", filepath.Join(d.dir, "a1", "admin-token"), a1, a2)
	g2 := d.gateway("g2", filepath.Join(d.dir, "a1", "admin-token"), a2, a1)
	det := d.detector("d1", 0, 1)
	for _, p := range []*proc{g1, g2, det} {
		p.waitReady(30 * time.Second)
	}
	db := pgOf(t, d)

	issue := func(at *proc, member string) string { return mustIssue(t, at, cl.Secret, member) }
	member, otherMember := fmt.Sprint(d.pop.MemberID(7)), fmt.Sprint(d.pop.MemberID(8))
	const insider, elsewhere = "203.0.113.88", "198.51.100.40"
	toks := map[string]string{"a1": issue(a1, member), "a2": issue(a2, member)}
	other := issue(a1, otherMember)
	for _, g := range []*proc{g1, g2} {
		for at, tok := range toks {
			if st, why, err := accessFrom(g, tok, member, elsewhere); err != nil || st != 200 {
				t.Fatalf("%s token at %s before the hit: %d %s %v", at, g.name, st, why, err)
			}
		}
	}

	// The customer's token from a1 asks for a decoy member.
	hitAt := time.Now()
	if st, why, err := accessFrom(g1, toks["a1"], decoys[0], insider); err != nil || st == 200 {
		t.Fatalf("decoy served: %d %s %v", st, why, err)
	}
	// Both tokens refused as revoked at both gateways, from an address
	// no block covers.
	refused := awaitRevoked(t, []*proc{g1, g2}, toks, member, elsewhere, hitAt, func() string {
		return dump(db) + "\n" + a1.tail() + "\n" + a2.tail()
	})
	var last time.Duration
	for k, after := range refused {
		t.Logf("%s refused as revoked_token %s after the decoy hit", k, after.Round(time.Millisecond))
		last = max(last, after)
	}
	t.Logf("the subject's tokens from both authorities refused at both gateways %s after the decoy hit", last.Round(time.Millisecond))

	// Another customer is untouched; the customer logs in again and is
	// served.
	fresh := issue(a2, member)
	for _, g := range []*proc{g1, g2} {
		if st, why, err := accessFrom(g, other, otherMember, elsewhere); err != nil || st != 200 {
			t.Fatalf("another customer refused at %s: %d %s %v", g.name, st, why, err)
		}
		if st, why, err := accessFrom(g, fresh, member, elsewhere); err != nil || st != 200 {
			t.Fatalf("the customer's fresh login refused at %s: %d %s %v", g.name, st, why, err)
		}
	}

	// Both actions carried out once.
	var alertID string
	if err := db.QueryRow(`SELECT id FROM detect_alerts WHERE rule = $1`, detect.RuleDecoySubject).Scan(&alertID); err != nil {
		t.Fatal(err)
	}
	for _, act := range []detect.Action{detect.ActionRevokeToken, detect.ActionForceRelogin} {
		id := "act-" + alertID + "-" + string(act)
		var state, target string
		var attempts int
		proctestWait(t, 10*time.Second, id+" done", func() bool {
			db.QueryRow(`SELECT state, attempts FROM detect_action_queue WHERE id = $1`, id).Scan(&state, &attempts)
			return state == detect.QueueDone
		})
		db.QueryRow(`SELECT target FROM detect_actions WHERE id = $1`, id).Scan(&target)
		if attempts != 1 {
			t.Fatalf("%s carried out after %d attempts", id, attempts)
		}
		if act == detect.ActionForceRelogin && target != member {
			t.Fatalf("%s aimed at %q, want the token's subject %s", id, target, member)
		}
	}
}

// awaitRevoked waits until each of toks (subject member, from address src)
// is refused as revoked_token at every gateway, and returns for each "NAME
// token at GATEWAY" how long after since it was first seen refused. It fails
// the test after 20 s, with diag's state.
func awaitRevoked(t *testing.T, gws []*proc, toks map[string]string, member, src string, since time.Time, diag func() string) map[string]time.Duration {
	t.Helper()
	refused := map[string]time.Duration{}
	deadline := time.Now().Add(20 * time.Second)
	for len(refused) < len(gws)*len(toks) {
		for _, g := range gws {
			for name, tok := range toks {
				k := name + " token at " + g.name
				if _, done := refused[k]; done {
					continue
				}
				st, why, err := accessFrom(g, tok, member, src)
				if err == nil && st != 200 && why == string(event.ReasonRevokedToken) {
					refused[k] = time.Since(since)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("20 s after the decoy hit only %v refused as revoked_token\n%s", refused, diag())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return refused
}

// mustIssue asks authority at for a token of member with the client secret,
// no login session, and fails the test without one.
func mustIssue(t *testing.T, at *proc, secret, member string) string {
	t.Helper()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if _, err := call("POST", at.url()+"/v1/tokens", secret, map[string]any{"subject": member, "audience": "shop-api"}, &out); err != nil || out.AccessToken == "" {
		t.Fatalf("issue at %s: %v", at.name, err)
	}
	return out.AccessToken
}
