package replicatest

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/proctest"
)

// Each engine cut in turn (a TCP proxy the test controls stands between the
// processes and Redis, NATS and MariaDB): refusals stay fail-closed, nothing
// acknowledged is lost, readiness says what is missing, and the deployment
// recovers by itself when the engine returns.
func TestEngineFaults(t *testing.T) {
	redisPx := proctest.NewProxy(t, redisAddr)
	natsPx := proctest.NewProxy(t, natsAddr)
	mariaPx := proctest.NewProxy(t, mariaAddr)
	d := newDeployment(t, engines{pg: "127.0.0.1:5432", redis: redisPx.Addr(), nats: natsPx.Addr(), maria: mariaPx.Addr()})
	a1, a2, admin, cl := d.twoAuthorities()
	g := d.gateway("g1", filepath.Join(d.dir, "a1", "admin-token"), a1, a2)
	g.waitReady(30 * time.Second)
	// Health, readiness and metrics on the admin listener only: on the
	// proxied listener the same paths are customer requests, refused.
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if st, _ := call("GET", strings.TrimSuffix(g.ready, "/readyz")+path, "", nil, nil); st != 200 {
			t.Fatalf("admin %s: %d", path, st)
		}
		if st, reason, err := access2(g, path); err != nil || st != 401 {
			t.Fatalf("proxied %s answered %d %s %v; want a refusal", path, st, reason, err)
		}
	}
	member := fmt.Sprint(d.pop.MemberID(7))
	issue := func(a *proc) (string, error) {
		var out struct {
			AccessToken string `json:"access_token"`
		}
		_, err := call("POST", a.url()+"/v1/tokens", cl.Secret, map[string]any{"subject": member, "audience": "shop-api"}, &out)
		return out.AccessToken, err
	}
	served := func(tok string) bool {
		st, _, err := access(g, tok, member)
		return err == nil && st == 200
	}
	eventually := func(what string, within time.Duration, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s", what, within)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	notReady := func(p *proc, check string) func() bool {
		return func() bool { st, m := p.readyz(); return st == 503 && m[check] != "ok" && m[check] != "" }
	}
	ready := func(p *proc) func() bool { return func() bool { st, _ := p.readyz(); return st == 200 } }

	before, err := issue(a1)
	if err != nil {
		t.Fatal(err)
	}
	eventually("a token served", 5*time.Second, func() bool { return served(before) })

	// Redis gone: no token is handed out without its ledger entry; the
	// authority is not ready; known tokens keep working; then it recovers.
	redisPx.Cut()
	for _, a := range []*proc{a1, a2} {
		if tok, err := issue(a); err == nil {
			t.Fatalf("%s issued a token with the ledger gone: %.20s…", a.name, tok)
		}
		eventually(a.name+" not ready without Redis", 5*time.Second, notReady(a, "ledger"))
	}
	if !served(before) {
		t.Fatal("a token issued before the outage is refused during it")
	}
	redisPx.Restore()
	var during string
	eventually("issuance back after Redis returns", 15*time.Second, func() bool { during, err = issue(a2); return err == nil })
	eventually("a1 ready again", 10*time.Second, ready(a1))
	eventually("the token issued after recovery served", 5*time.Second, func() bool { return served(during) })

	// NATS gone: the replicas cannot hear each other, so every answer is
	// confirmed with Redis: a revocation at a2 is refused by the gateway
	// following a1 within a second, and a token issued at a2 is served.
	natsPx.Cut()
	for _, a := range []*proc{a1, a2} {
		eventually(a.name+" not ready without NATS", 5*time.Second, notReady(a, "bus"))
	}
	fresh, err := issue(a2)
	if err != nil {
		t.Fatalf("issuance without the bus: %v", err)
	}
	eventually("a token issued at a2 without the bus, at the gateway following a1", 5*time.Second, func() bool { return served(fresh) })
	start := time.Now()
	st, _ := call("POST", a2.url()+"/v1/tokens/revoke", cl.Secret, "token="+url.QueryEscape(fresh), nil)
	t.Logf("revocation without the bus answered %d (the caller retries a 503; the revocation is durable)", st)
	eventually("revocation at a2 refused at the gateway following a1 without the bus", time.Second+time.Since(start), func() bool {
		s, reason, err := access(g, fresh, member)
		return err == nil && s == 401 && reason == "revoked_token"
	})
	natsPx.Restore()
	for _, a := range []*proc{a1, a2} {
		eventually(a.name+" ready after NATS returns", 20*time.Second, ready(a))
	}
	eventually("gateway ready after NATS returns", 20*time.Second, ready(g))
	if served(fresh) || !served(before) || !served(during) {
		t.Fatal("after the bus returned: a revoked token served or a live one refused")
	}

	// MariaDB gone: a key operation the audit log cannot record does not
	// happen; readiness says so; then rotation works again.
	var keysBefore struct{ Keys []map[string]any }
	if _, err := call("GET", a1.url()+"/v1/keys", admin, nil, &keysBefore); err != nil {
		t.Fatal(err)
	}
	mariaPx.Cut()
	eventually("a1 not ready without the audit database", 5*time.Second, notReady(a1, "audit"))
	if _, err := call("POST", a1.url()+"/v1/keys/rotate", admin, map[string]string{}, nil); err == nil {
		t.Fatal("a key rotated with the audit log unreachable")
	}
	var keysDuring struct{ Keys []map[string]any }
	if _, err := call("GET", a1.url()+"/v1/keys", admin, nil, &keysDuring); err != nil {
		t.Fatal(err)
	}
	if len(keysDuring.Keys) != len(keysBefore.Keys) || len(keysBefore.Keys) == 0 {
		t.Fatalf("a refused rotation changed the key set: %d keys, then %d", len(keysBefore.Keys), len(keysDuring.Keys))
	}
	mariaPx.Restore()
	rotations := 0
	eventually("rotation back after MariaDB returns", 20*time.Second, func() bool {
		_, err := call("POST", a1.url()+"/v1/keys/rotate", admin, map[string]string{}, nil)
		if err == nil {
			rotations++
		}
		return err == nil
	})
	if rotations != 1 {
		t.Fatalf("%d rotations acknowledged", rotations)
	}
	eventually("a1 ready after MariaDB returns", 10*time.Second, ready(a1))
	if !served(before) || !served(during) {
		t.Fatal("a live token refused at the end")
	}
	// The rotation made when MariaDB came back, and the first key, are in the
	// one log; the refused rotation is not.
	checkAudit(t, d, a2, map[string]uint64{"keys.rotate": 2, "client.add": 1})
}
