package replicatest

import (
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/token"
)

// shared engines, no proxies in between.
var direct = engines{pg: "127.0.0.1:5432", redis: redisAddr, nats: natsAddr, maria: mariaAddr}

// issued is one token the authority acknowledged.
type issued struct {
	tok, kid, member string
	at               time.Time
	revokedAt        time.Time // zero while live
}

// ledgerOf is what the script knows: every acknowledged token and when it
// was revoked.
type ledgerOf struct {
	mu     sync.Mutex
	tokens []*issued
}

func (l *ledgerOf) add(x *issued) { l.mu.Lock(); l.tokens = append(l.tokens, x); l.mu.Unlock() }

func (l *ledgerOf) snapshot() []issued {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]issued, len(l.tokens))
	for i, x := range l.tokens {
		out[i] = *x
	}
	return out
}

// Two authorities, two gateways and two detectors as separate processes on
// PostgreSQL, Redis, NATS and MariaDB. A script issues tokens at both
// authorities, revokes tokens (RFC 7009) at either, revokes a signing key,
// offboards a developer over SCIM at one authority (their client secret must
// stop issuing at the other within 1 s),
// and attacks with forged tokens, while one process of each role in turn is
// killed with SIGKILL and restarted. Asserted throughout and at the end: no
// forged token is ever served; no revoked token is served by any gateway
// more than 1 s after its revocation was acknowledged; every acknowledged
// token is served by both gateways (none lost, never refused as not issued);
// every acknowledged key operation is in the one audit log, which
// `custos audit verify` checks from its published URL and verifier key.
//
// Detection in scale-out: an insider uses live tokens for decoy members from
// sources of both detectors' partitions while a detector and the gateways
// are killed; every token a gateway refused as decoy_subject has its own
// alert; every alert is in PostgreSQL once (one row per rule, entity and dedup window,
// across both detectors and the redeliveries after the kill), and both
// authorities list exactly those, with their incidents.
func TestHighAvailability(t *testing.T) {
	d := newDeployment(t, direct)
	a1 := d.authority("a1")
	a1.waitReady(30 * time.Second)
	admin := readToken(t, filepath.Join(d.dir, "a1", "admin-token"))
	var cl struct {
		Secret string `json:"client_secret"`
	}
	if _, err := call("POST", a1.url()+"/v1/clients", admin, map[string]any{"name": "login", "audience": []string{"shop-api"}}, &cl); err != nil {
		t.Fatal(err)
	}
	// A developer provisioned over SCIM, holder of a client secret: at the
	// end of the chaos, offboarded at A1, the secret must stop issuing at A2.
	var scim struct {
		Token string `json:"token"`
	}
	var dev struct {
		ID string `json:"id"`
	}
	var held struct {
		Secret string `json:"client_secret"`
	}
	if _, err := call("POST", a1.url()+"/v1/credentials", admin, map[string]string{"name": "okta", "role": "scim"}, &scim); err != nil {
		t.Fatal(err)
	}
	if _, err := call("POST", a1.url()+"/scim/v2/Users", scim.Token, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": "dev@shop.example", "active": true}, &dev); err != nil {
		t.Fatal(err)
	}
	if _, err := call("POST", a1.url()+"/v1/clients", admin, map[string]any{"name": "batch", "audience": []string{"shop-api"}, "held_by": dev.ID}, &held); err != nil {
		t.Fatal(err)
	}
	a2 := d.authority("a2")
	a2.waitReady(30 * time.Second)
	auths := []*proc{a1, a2}
	tokenFile := filepath.Join(d.dir, "a1", "admin-token")
	g1 := d.gateway("g1", tokenFile, a1, a2)
	g2 := d.gateway("g2", tokenFile, a2, a1)
	det1, det2 := d.detector("d1", 0, 2), d.detector("d2", 1, 2)
	for _, p := range []*proc{g1, g2, det1, det2} {
		p.waitReady(30 * time.Second)
	}
	gws := []*proc{g1, g2}

	var led ledgerOf
	var violations []string
	var vmu sync.Mutex
	violate := func(format string, args ...any) {
		vmu.Lock()
		violations = append(violations, fmt.Sprintf(format, args...))
		vmu.Unlock()
	}
	var stats struct{ issued, issueFail, revoked, revokeFail, probes, forgedProbes atomic.Int64 }
	var propagation []time.Duration
	var pmu sync.Mutex

	// issue at authority i, falling back to the other (the load balancer's job).
	issue := func(i int) (*issued, error) {
		member := fmt.Sprint(d.pop.MemberID(1 + uint64(mrand.IntN(int(d.pop.Members)))))
		var out struct {
			AccessToken string `json:"access_token"`
			KID         string `json:"kid"`
		}
		var err error
		for k := 0; k < 2; k++ {
			a := auths[(i+k)%2]
			if _, err = call("POST", a.url()+"/v1/tokens", cl.Secret, map[string]any{"subject": member, "audience": "shop-api"}, &out); err == nil {
				x := &issued{tok: out.AccessToken, kid: out.KID, member: member, at: time.Now()}
				led.add(x)
				return x, nil
			}
		}
		return nil, err
	}
	revoke := func(x *issued, i int) bool {
		for k := 0; k < 2; k++ {
			a := auths[(i+k)%2]
			if _, err := call("POST", a.url()+"/v1/tokens/revoke", cl.Secret, "token="+url.QueryEscape(x.tok), nil); err == nil {
				led.mu.Lock()
				x.revokedAt = time.Now()
				led.mu.Unlock()
				return true
			}
		}
		return false
	}

	// Forged tokens: a real kid and subject, a key of the attacker's.
	_, attacker, _ := ed25519.GenerateKey(rand.Reader)
	forge := func(kid, member string) string {
		now := time.Now().Unix()
		raw, err := token.Sign(attacker, keys.EdDSA, kid, token.Claims{Issuer: d.issuer, Subject: member,
			Audience: "shop-api", IssuedAt: now, NotBefore: now, ExpiresAt: now + 300, JTI: fmt.Sprint("forged-", mrand.Uint64()), ClientID: "login"})
		if err != nil {
			panic(err)
		}
		return raw
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	// The login service: a token every 40 ms, alternating authorities.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(40 * time.Millisecond):
			}
			if _, err := issue(i); err != nil {
				stats.issueFail.Add(1)
			} else {
				stats.issued.Add(1)
			}
		}
	}()
	// Revocations: one live token every 300 ms, at either authority.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			led.mu.Lock()
			var live []*issued
			for _, x := range led.tokens {
				if x.revokedAt.IsZero() {
					live = append(live, x)
				}
			}
			led.mu.Unlock()
			if len(live) == 0 {
				continue
			}
			x := live[mrand.IntN(len(live))]
			// Make sure it is served first, so a gateway holds it as live.
			access(gws[i%2], x.tok, x.member)
			if revoke(x, i) {
				stats.revoked.Add(1)
			} else {
				stats.revokeFail.Add(1)
			}
		}
	}()
	// Probes: every revoked token and a forged one at both gateways, over
	// and over; and each new token once, which must never be "not issued".
	wg.Add(1)
	go func() {
		defer wg.Done()
		seen := map[string]bool{}
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, x := range led.snapshot() {
				for _, g := range gws {
					start := time.Now()
					if !x.revokedAt.IsZero() {
						st, reason, err := access(g, x.tok, x.member)
						if err != nil {
							continue // the gateway is down
						}
						stats.probes.Add(1)
						if st == 200 && start.Sub(x.revokedAt) > time.Second {
							violate("%s served a token %s after its revocation", g.name, start.Sub(x.revokedAt).Round(time.Millisecond))
						}
						if st != 200 && reason != "revoked_token" && reason != "revoked_key" && reason != "ledger_unavailable" {
							violate("%s refused a revoked token as %q", g.name, reason)
						}
						continue
					}
					if seen[x.tok+g.name] {
						continue
					}
					st, reason, err := access(g, x.tok, x.member)
					if err != nil {
						continue
					}
					if reason == "not_issued" {
						violate("%s refused an acknowledged token as not issued", g.name)
					}
					if st == 200 {
						seen[x.tok+g.name] = true
					}
				}
			}
			for _, g := range gws {
				kid := ""
				if s := led.snapshot(); len(s) > 0 {
					kid = s[len(s)-1].kid
				}
				f := forge(kid, fmt.Sprint(d.pop.MemberID(1)))
				if st, _, err := access(g, f, fmt.Sprint(d.pop.MemberID(1))); err == nil {
					stats.forgedProbes.Add(1)
					if st == 200 {
						violate("%s served a forged token", g.name)
					}
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	// The insider: live tokens used for decoy members from many sources
	// (sixteen /24s: both detectors' partitions), through both gateways,
	// while gateways and a detector are killed. Each token refused as
	// decoy_subject must end as its own decoy_subject alert, once.
	decoyHits := map[string][]decoyHit{} // by the jti of the issued tokens that hit a decoy
	var dmu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			var x *issued
			for _, y := range slices.Backward(led.snapshot()) {
				if y.revokedAt.IsZero() {
					x = &y
					break
				}
			}
			if x == nil {
				continue
			}
			st, reason, err := accessFrom(gws[i%2], x.tok, decoys[i%2], fmt.Sprintf("10.%d.1.7", 1+i%16))
			if err != nil {
				continue
			}
			if st == 200 {
				violate("%s served a decoy member", gws[i%2].name)
			}
			if reason != "decoy_subject" {
				continue // the token's key was revoked meanwhile, or the gateway was not ready: refused all the same
			}
			dmu.Lock()
			jti := tokenJTI(x.tok)
			decoyHits[jti] = append(decoyHits[jti], decoyHit{kid: x.kid, gateway: gws[i%2].name, at: time.Now()})
			dmu.Unlock()
		}
	}()

	// The chaos: one process of each role killed with SIGKILL and restarted.
	var keyOps []string // kids of acknowledged key revocations
	schedule := []struct {
		at   time.Duration
		what string
		fn   func()
	}{
		{3 * time.Second, "kill -9 a1", func() { a1.kill() }},
		{5 * time.Second, "restart a1", func() { a1.start(); a1.waitReady(30 * time.Second) }},
		{7 * time.Second, "kill -9 g1", func() { g1.kill() }},
		{8 * time.Second, "restart g1", func() { g1.start(); g1.waitReady(30 * time.Second) }},
		{10 * time.Second, "revoke the signing key at a2", func() {
			s := led.snapshot()
			kid := s[len(s)-1].kid
			if _, err := call("POST", a2.url()+"/v1/keys/"+kid+"/revoke", readToken(t, filepath.Join(d.dir, "a2", "admin-token")), map[string]string{"reason": "drill"}, nil); err != nil {
				violate("key revocation refused: %v", err)
				return
			}
			at := time.Now()
			keyOps = append(keyOps, kid)
			led.mu.Lock()
			for _, x := range led.tokens {
				if x.kid == kid && x.revokedAt.IsZero() {
					x.revokedAt = at
				}
			}
			led.mu.Unlock()
		}},
		{12 * time.Second, "kill -9 d1", func() { det1.kill() }},
		{13 * time.Second, "restart d1", func() { det1.start(); det1.waitReady(30 * time.Second) }},
		{15 * time.Second, "kill -9 a2", func() { a2.kill() }},
		{17 * time.Second, "restart a2", func() { a2.start(); a2.waitReady(30 * time.Second) }},
		{19 * time.Second, "kill -9 g2", func() { g2.kill() }},
		{20 * time.Second, "restart g2", func() { g2.start(); g2.waitReady(30 * time.Second) }},
		{21 * time.Second, "offboard the developer over SCIM at a1", func() {
			issueHeld := func(a *proc) int {
				st, _ := call("POST", a.url()+"/v1/tokens", held.Secret, map[string]any{"subject": fmt.Sprint(d.pop.MemberID(1)), "audience": "shop-api"}, nil)
				return st
			}
			if st := issueHeld(a2); st != 200 {
				violate("the developer's client secret refused at a2 before offboarding: %d", st)
			}
			if _, err := call("PATCH", a1.url()+"/scim/v2/Users/"+dev.ID, scim.Token, map[string]any{
				"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
				"Operations": []map[string]any{{"op": "replace", "path": "active", "value": false}}}, nil); err != nil {
				violate("offboarding refused: %v", err)
				return
			}
			at := time.Now()
			for issueHeld(a2) != 401 {
				if time.Since(at) > time.Second {
					violate("an offboarded developer's client secret still issues at a2 %s after offboarding at a1", time.Since(at).Round(time.Millisecond))
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("offboarded client secret refused at a2 after %s", time.Since(at).Round(time.Millisecond))
		}},
		{23 * time.Second, "end", func() {}},
	}
	begin := time.Now()
	for _, step := range schedule {
		if d := time.Until(begin.Add(step.at)); d > 0 {
			time.Sleep(d)
		}
		t.Logf("%6.1fs %s", time.Since(begin).Seconds(), step.what)
		step.fn()
	}
	close(stop)
	wg.Wait()

	// Every revoked token refused, every live one served, by both gateways.
	final := led.snapshot()
	for _, x := range final {
		for _, g := range gws {
			st, reason, err := access(g, x.tok, x.member)
			if err != nil {
				t.Fatalf("%s: %v", g.name, err)
			}
			switch {
			case !x.revokedAt.IsZero() && st == 200:
				violate("%s serves a revoked token at the end", g.name)
			case x.revokedAt.IsZero() && st != 200:
				violate("%s refuses an acknowledged live token at the end: %d %s", g.name, st, reason)
			}
		}
	}
	// Propagation of a fresh revocation, measured at both gateways.
	for i := 0; i < 20; i++ {
		x, err := issue(i)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gws {
			access(g, x.tok, x.member)
		}
		if !revoke(x, i) {
			t.Fatal("revocation failed with every process up")
		}
		for _, g := range gws {
			for {
				st, _, _ := access(g, x.tok, x.member)
				if st != 200 {
					break
				}
				if time.Since(x.revokedAt) > 2*time.Second {
					violate("%s served a token 2 s after its revocation", g.name)
					break
				}
				time.Sleep(time.Millisecond)
			}
			pmu.Lock()
			propagation = append(propagation, time.Since(x.revokedAt))
			pmu.Unlock()
		}
	}
	checkAudit(t, d, a1, map[string]uint64{"keys.revoke": uint64(len(keyOps)), "keys.rotate": 1, "client.add": 1})
	checkAlerts(t, d, auths, decoyHits, begin)

	t.Logf("issued %d (failed %d), revoked %d (failed %d), probes of revoked tokens %d, forged %d; revocation reached a gateway in at most %s",
		stats.issued.Load(), stats.issueFail.Load(), stats.revoked.Load(), stats.revokeFail.Load(), stats.probes.Load(), stats.forgedProbes.Load(), maxDur(propagation))
	for _, v := range violations {
		t.Error(v)
	}
	if len(violations) > 0 || t.Failed() {
		for _, p := range []*proc{a1, a2, g1, g2} {
			t.Logf("--- %s\n%s", p.name, p.tail())
		}
	}
	if stats.issued.Load() < 100 || stats.revoked.Load() < 10 || stats.probes.Load() < 100 || stats.forgedProbes.Load() < 50 {
		t.Fatalf("the script did too little to prove anything")
	}
}

func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// checkAudit runs `custos audit verify` on the one log as a witness would
// (its published URL and verifier key only) until the verified log holds at
// least want of each kind (a checkpoint covers new entries within a second
// or two), and fails if it never does.
func checkAudit(t *testing.T, d *deployment, a *proc, want map[string]uint64) {
	t.Helper()
	resp, err := client.Get(a.url() + "/audit/verifier")
	if err != nil {
		t.Fatal(err)
	}
	vkey := filepath.Join(t.TempDir(), "vkey")
	b := make([]byte, 512)
	n, _ := resp.Body.Read(b)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(b[:n]), "custos.test/audit+") {
		t.Fatalf("GET /audit/verifier: %d %q", resp.StatusCode, b[:n])
	}
	os.WriteFile(vkey, b[:n], 0o644)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command(d.bin, "audit", "verify", "--url", a.url()+"/audit/", "--vkey", vkey, "--json").CombinedOutput()
		if err != nil {
			t.Fatalf("custos audit verify: %v\n%s", err, out)
		}
		var res struct {
			OK    bool              `json:"ok"`
			Size  uint64            `json:"size"`
			Kinds map[string]uint64 `json:"kinds"`
		}
		if err := json.Unmarshal(out, &res); err != nil || !res.OK {
			t.Fatalf("custos audit verify: %s", out)
		}
		missing := false
		for k, n := range want {
			if res.Kinds[k] < n {
				missing = true
			}
		}
		if !missing {
			t.Logf("audit log: %d entries, kinds %v", res.Size, res.Kinds)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("acknowledged operations missing from the one audit log: have %v, want at least %v", res.Kinds, want)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// checkAlerts asserts detection in scale-out: within a few seconds, every
// token whose decoy request a gateway refused as decoy_subject has its own
// decoy_subject alert in PostgreSQL (a refusal is answered only once its
// event is stored, and a restarted detector first handles what it was
// handed before it died); no rule, entity and dedup window has more than
// one row; and both authorities' GET /v1/alerts list exactly the rows'
// ids, each with its incident.
func checkAlerts(t *testing.T, d *deployment, auths []*proc, hits map[string][]decoyHit, begin time.Time) {
	t.Helper()
	if len(hits) == 0 {
		t.Fatal("no decoy request was refused as decoy_subject")
	}
	pg, err := sql.Open("pgx", pgBase+"&search_path="+d.schema)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	admin := readToken(t, filepath.Join(d.dir, "a1", "admin-token"))
	type row struct{ id, rule, entity, incident string }
	var rows []row
	var problem string
	var missing []string // tokens with a decoy hit and no alert
	deadline := time.Now().Add(15 * time.Second)
	for {
		rows, problem = nil, ""
		rs, err := pg.Query(`SELECT id, rule, entity, incident_id, raised FROM detect_alerts ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		windows := map[string]int{}
		entities := map[string]bool{}
		for rs.Next() {
			var r row
			var raised int64
			if err := rs.Scan(&r.id, &r.rule, &r.entity, &r.incident, &raised); err != nil {
				t.Fatal(err)
			}
			rows = append(rows, r)
			windows[fmt.Sprint(r.rule, " ", r.entity, " ", time.Unix(0, raised).Truncate(time.Hour))]++
			entities[r.rule+" "+r.entity] = true
		}
		rs.Close()
		for w, n := range windows {
			if n > 1 {
				t.Fatalf("%d alert rows for %s: raised more than once", n, w)
			}
		}
		// An issued token that touches a decoy gets its own alert (and
		// its own containment), keyed by the token.
		missing = missing[:0]
		for jti := range hits {
			if !entities["decoy_subject jti:"+jti] {
				missing = append(missing, jti)
			}
		}
		if len(missing) > 0 {
			problem = fmt.Sprintf("%d of %d tokens refused as decoy_subject have no decoy_subject alert: %v", len(missing), len(hits), missing)
		}
		if problem == "" {
			var ids []string
			for _, r := range rows {
				ids = append(ids, r.id)
			}
			for _, a := range auths {
				var got struct {
					Alerts []struct {
						ID       string `json:"id"`
						Incident string `json:"incident_id"`
					} `json:"alerts"`
				}
				if _, err := call("GET", a.url()+"/v1/alerts?limit=10000", admin, nil, &got); err != nil {
					t.Fatal(err)
				}
				var listed []string
				for _, x := range got.Alerts {
					listed = append(listed, x.ID)
					if _, err := call("GET", a.url()+"/v1/incidents/"+x.Incident, admin, nil, nil); err != nil {
						problem = fmt.Sprintf("%s: alert %s: %v", a.name, x.ID, err)
					}
				}
				slices.Sort(listed)
				if !slices.Equal(listed, ids) {
					problem = fmt.Sprintf("%s lists alerts %v, PostgreSQL holds %v", a.name, listed, ids)
				}
			}
		}
		if problem == "" {
			t.Logf("alerts: %d rows, each once, listed alike by %d authorities; each of the %d tokens refused as decoy_subject has its own", len(rows), len(auths), len(hits))
			return
		}
		if time.Now().After(deadline) {
			diagnoseDecoys(t, d, missing, hits, begin)
			t.Fatal(problem)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// decoyHit is one decoy request refused as decoy_subject.
type decoyHit struct {
	kid, gateway string
	at           time.Time
}

// tokenJTI reads the jti claim of a compact token the authority issued
// ("" when it has none, which the alert check then reports).
func tokenJTI(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		JTI string `json:"jti"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	return c.JTI
}

// diagnoseDecoys logs, for each token without a decoy alert, its hits and
// the access events of the stream that carry its jti.
func diagnoseDecoys(t *testing.T, d *deployment, missing []string, hits map[string][]decoyHit, begin time.Time) {
	want := map[string]bool{}
	for _, j := range missing {
		want[j] = true
		for _, h := range hits[j] {
			t.Logf("no alert for %s: refused at %s by %s (kid %s)", j, h.at.Sub(begin).Round(time.Millisecond), h.gateway, h.kid)
		}
	}
	for _, ev := range accessEvents(t, d) {
		if want[ev.Token.JTI] && ev.Reason == event.ReasonDecoySubject {
			t.Logf("no alert for %s: event %s at %s from %s, source %s", ev.Token.JTI, ev.RequestID, ev.Time.Sub(begin).Round(time.Millisecond), ev.Gateway, ev.SrcIP)
		}
	}
}
