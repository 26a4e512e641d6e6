package replicatest

import (
	"context"
	"crypto"
	"encoding/base64"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/internal/geodb"
	"github.com/custos-dev/custos/internal/proctest"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/keys/sealed"
	"github.com/custos-dev/custos/token"
)

// Containment as deployed: each kind of action, taken at one process, is
// enforced at every gateway of every authority.

// gatewayWith starts a standalone gateway like d.gateway, with extra lines
// in its gateway section (a GeoIP database).
func (d *deployment) gatewayWith(name, tokenFile, extra string, authorities ...*proc) *proc {
	addr, admin := proctest.FreeAddr(d.t), proctest.FreeAddr(d.t)
	var urls []string
	for _, a := range authorities {
		urls = append(urls, a.url())
	}
	p := &proc{t: d.t, name: name, role: "gateway", bin: d.bin, denv: d.env, addr: addr, ready: "http://" + admin + "/readyz",
		args: []string{"gateway", "--config", d.config(name, "  name: "+name+"\n  trusted_proxies: [127.0.0.1/32]\n"+extra, ""), "--upstream", d.upstream, "--listen", addr,
			"--admin-listen", admin, "--authority", strings.Join(urls, ","), "--token-file", tokenFile}}
	d.procs[name] = p
	p.start()
	return p
}

// issueFrom issues a token for member at a with the client's secret.
func issueFrom(t *testing.T, a *proc, secret, member, session string) (tok, kid string, status int) {
	t.Helper()
	var out struct {
		AccessToken string `json:"access_token"`
		KID         string `json:"kid"`
	}
	body := map[string]any{"subject": member, "audience": "shop-api"}
	if session != "" {
		body["session_id"] = session
	}
	st, _ := call("POST", a.url()+"/v1/tokens", secret, body, &out)
	return out.AccessToken, out.KID, st
}

// pollUntil polls f every 20 ms for at most within and returns how long it
// took; it fails the test when f never holds.
func pollUntil(t *testing.T, within time.Duration, what string, f func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !f() {
		if time.Since(start) > within {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// reachAll polls check at every gateway every 20 ms until it holds at all of
// them, and returns, per gateway, how long after since it first held.
func reachAll(t *testing.T, since time.Time, within time.Duration, what string, gws []*proc, check func(g *proc) bool) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	for len(out) < len(gws) {
		for _, g := range gws {
			if _, ok := out[g.name]; !ok && check(g) {
				out[g.name] = time.Since(since)
			}
		}
		if time.Since(since) > within {
			t.Fatalf("not within %s at every gateway (%v reached): %s", within, out, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return out
}

// gatewayRefuses reports whether g refuses tok for member with reason why.
func gatewayRefuses(g *proc, tok, member, src, why string) bool {
	st, got, err := accessFrom(g, tok, member, src)
	return err == nil && st != 200 && got == why
}

// gatewayServes reports whether g serves tok for member.
func gatewayServes(g *proc, tok, member, src string) bool {
	st, _, err := accessFrom(g, tok, member, src)
	return err == nil && st == 200
}

// A token signed with the real key (the insider's copy of the shared
// keyring and its key-encryption key) that the authority never issued: a
// gateway's not_issued refusal, read by a detector process from the
// access stream, revokes the signing key once, through exactly one of two authorities, and every
// gateway of both refuses the key's real tokens as revoked_key. The
// authority that carried it out is then killed with SIGKILL while it holds
// the claim of another revocation: the other authority takes it over once
// the lease ends, and both gateways refuse that key too.
func TestDetectorRevokeKeyAcrossReplicas(t *testing.T) {
	d := newDeployment(t, direct)
	d.detect = "detect:\n  contain: true\n"
	// a1 reaches the audit database through a proxy the test can stall.
	auditPx := newStallProxy(t, mariaAddr)
	d.eng.maria = auditPx.addr()
	a1 := d.authority("a1")
	a1.waitReady(30 * time.Second)
	d.eng.maria = mariaAddr
	admin := readToken(t, filepath.Join(d.dir, "a1", "admin-token"))
	var cl struct {
		Secret string `json:"client_secret"`
	}
	if _, err := call("POST", a1.url()+"/v1/clients", admin, map[string]any{"name": "login", "audience": []string{"shop-api"}}, &cl); err != nil {
		t.Fatal(err)
	}
	a2 := d.authority("a2")
	a2.waitReady(30 * time.Second)
	tokFile := filepath.Join(d.dir, "a1", "admin-token")
	g1 := d.gateway("g1", tokFile, a1, a2)
	g2 := d.gateway("g2", tokFile, a2, a1)
	det := d.detector("d1", 0, 1)
	for _, p := range []*proc{g1, g2, det} {
		p.waitReady(30 * time.Second)
	}
	db := pgOf(t, d)
	gws := []*proc{g1, g2}
	member := fmt.Sprint(d.pop.MemberID(5))
	tok, kid, st := issueFrom(t, a1, cl.Secret, member, "s-5")
	if st != 200 {
		t.Fatalf("issue: %d", st)
	}
	reachAll(t, time.Now(), 10*time.Second, "the real token served", gws, func(g *proc) bool { return gatewayServes(g, tok, member, "") })

	// The insider's copy of the signing key: the shared keyring and its
	// key-encryption key, as in the breach. A token signed with it that
	// the authority never issued is refused by g1 as not_issued, and g1's
	// refusal event reaches the detector over the access stream.
	ctx := context.Background()
	kek, err := base64.StdEncoding.DecodeString(d.kek)
	if err != nil {
		t.Fatal(err)
	}
	kk, err := sealed.KEKFromBytes(kek)
	if err != nil {
		t.Fatal(err)
	}
	keyring, err := sealed.OpenPostgres(ctx, db, kk)
	if err != nil {
		t.Fatal(err)
	}
	defer keyring.Close()
	stolen, err := keyring.Signer(kid)
	if err != nil {
		t.Fatal(err)
	}
	forge := func(kid string, signer crypto.Signer) string {
		now := time.Now().Unix()
		raw, err := token.Sign(signer, keys.EdDSA, kid, token.Claims{Issuer: d.issuer, Subject: member, Audience: "shop-api",
			IssuedAt: now, NotBefore: now, ExpiresAt: now + 300, JTI: fmt.Sprint("forged-", now), ClientID: "login"})
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	forged := forge(kid, stolen)
	found := time.Now()
	if st, why, err := accessFrom(g1, forged, member, "203.0.113.66"); err != nil || st != 401 || why != "not_issued" {
		t.Fatalf("forged token at g1: %d %s %v", st, why, err)
	}
	took := reachAll(t, found, 20*time.Second, "the real token refused as revoked_key", gws,
		func(g *proc) bool { return gatewayRefuses(g, tok, member, "", "revoked_key") })
	t.Logf("key %s revoked on g1's not_issued refusal of a forged token: refused as revoked_key at g1 after %s, at g2 after %s",
		kid, took["g1"].Round(time.Millisecond), took["g2"].Round(time.Millisecond))

	// Carried out once: one queued action, done on its first attempt, one
	// keys.revoke entry in the audit log; both authorities list the key
	// revoked and sign with another.
	var alertID string
	if err := db.QueryRow(`SELECT id FROM detect_alerts WHERE rule = $1`, detect.RuleNotIssued).Scan(&alertID); err != nil {
		t.Fatalf("no not_issued alert: %v\n%s", err, dump(db))
	}
	actID := "act-" + alertID + "-revoke_key"
	var state, owner, body string
	var attempts int
	if err := db.QueryRow(`SELECT state, owner, attempts, body FROM detect_action_queue WHERE id = $1`, actID).Scan(&state, &owner, &attempts, &body); err != nil {
		t.Fatalf("%s: %v\n%s", actID, err, dump(db))
	}
	if state != detect.QueueDone || attempts != 1 {
		t.Fatalf("%s: %s after %d attempts by %s", actID, state, attempts, owner)
	}
	checkAuditExact(t, d, a2, "keys.revoke", 1)
	for _, a := range []*proc{a1, a2} {
		if st := keyStateAt(t, a, admin, kid); st != "revoked" {
			t.Fatalf("%s lists key %s as %q", a.name, kid, st)
		}
	}

	// A token of the new key is served by both gateways.
	tok2, kid2, st := issueFrom(t, a2, cl.Secret, member, "s-5b")
	if st != 200 || kid2 == kid {
		t.Fatalf("issue after the revocation: %d, kid %s (revoked %s)", st, kid2, kid)
	}
	reachAll(t, time.Now(), 10*time.Second, "a token of the new key served", gws, func(g *proc) bool { return gatewayServes(g, tok2, member, "") })

	// a1 is killed with SIGKILL while it holds the claim of the next
	// revocation: a2 is frozen (SIGSTOP) so that a1 claims it, and a1's
	// audit database stops answering (its connections stall), so that a1
	// is still journaling the revocation when it dies. The row stays
	// claimed by a1 until its lease ends; then a2, resumed, claims it and
	// carries it out, and both gateways refuse the new key.
	a2.cmd.Process.Signal(syscall.SIGSTOP)
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			a2.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer resume()
	auditPx.stall()
	keyring2, err := sealed.OpenPostgres(ctx, db, kk)
	if err != nil {
		t.Fatal(err)
	}
	defer keyring2.Close()
	stolen2, err := keyring2.Signer(kid2)
	if err != nil {
		t.Fatal(err)
	}
	if st, why, err := accessFrom(g1, forge(kid2, stolen2), member, "203.0.113.67"); err != nil || st != 401 || why != "not_issued" {
		t.Fatalf("forged token of the new key at g1: %d %s %v", st, why, err)
	}
	a1Pid := fmt.Sprintf("/%d/", a1.cmd.Process.Pid)
	var id2, owner2 string
	var leaseEnd int64
	pollUntil(t, 20*time.Second, "a1 claims the new key's revocation", func() bool {
		err := db.QueryRow(`SELECT id, owner, lease_until FROM detect_action_queue WHERE state = 'claimed' AND body LIKE $1`, "%"+kid2+"%").Scan(&id2, &owner2, &leaseEnd)
		return err == nil && strings.Contains(owner2, a1Pid)
	})
	a1.kill()
	killed := time.Now()
	if db.QueryRow(`SELECT state FROM detect_action_queue WHERE id = $1`, id2).Scan(&state); state != detect.QueueClaimed {
		t.Fatalf("%s is %s once a1 is dead, want claimed", id2, state)
	}
	resume()
	var by string
	takeover := pollUntil(t, 40*time.Second, "a1's claim taken over by a2", func() bool {
		db.QueryRow(`SELECT state, owner FROM detect_action_queue WHERE id = $1`, id2).Scan(&state, &by)
		return state == detect.QueueDone
	})
	lease := time.Unix(0, leaseEnd).Sub(killed)
	if by == owner2 || !strings.Contains(by, fmt.Sprintf("/%d/", a2.cmd.Process.Pid)) || time.Now().Before(time.Unix(0, leaseEnd)) {
		t.Fatalf("%s done by %q %s after the kill, its lease ending %s after it", id2, by, takeover, lease)
	}
	gone := reachAll(t, killed, 30*time.Second, "the new key refused as revoked_key after the takeover", gws,
		func(g *proc) bool { return gatewayRefuses(g, tok2, member, "", "revoked_key") })
	if st := keyStateAt(t, a2, admin, kid2); st != "revoked" {
		t.Fatalf("a2 lists key %s as %q", kid2, st)
	}
	// a1 died before its journal entry was written: the one audit log
	// holds the two revocations once each.
	checkAuditExact(t, d, a2, "keys.revoke", 2)
	t.Logf("a1 killed holding the claim of %s, %s before its lease ended: a2 carried it out %s after the kill; refused as revoked_key at g1 after %s, at g2 after %s",
		id2, lease.Round(time.Millisecond), takeover.Round(time.Millisecond), gone["g1"].Round(time.Millisecond), gone["g2"].Round(time.Millisecond))
}

// stallProxy forwards TCP connections to a server until stall; from then
// on it forwards nothing and closes nothing, as a server that stopped
// answering in the middle of a write. Stalled connections are never
// resumed: what they held is dropped when the test ends.
type stallProxy struct {
	ln      net.Listener
	target  string
	stalled atomic.Bool
	mu      sync.Mutex
	conns   []net.Conn
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go p.pipe(s, c)
			go p.pipe(c, s)
		}
	}()
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

func (p *stallProxy) stall() { p.stalled.Store(true) }

func (p *stallProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if p.stalled.Load() {
			return // the bytes are held back for good; Cleanup closes both ends
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// keyStateAt is kid's state as a lists it.
func keyStateAt(t *testing.T, a *proc, admin, kid string) string {
	t.Helper()
	var ks struct {
		Keys []struct {
			KID   string `json:"kid"`
			State string `json:"state"`
		} `json:"keys"`
	}
	if _, err := call("GET", a.url()+"/v1/keys", admin, nil, &ks); err != nil {
		t.Fatal(err)
	}
	for _, k := range ks.Keys {
		if k.KID == kid {
			return k.State
		}
	}
	return ""
}

// A client whose secret issuance detection at a1 finds in the wrong hands
// (tokens with no login session behind them: issuance_without_login) is
// suspended there, and a2 refuses the secret too, within
// authority.CacheTTL of the suspension.
func TestIssuanceSuspendAcrossReplicas(t *testing.T) {
	d := newDeployment(t, direct)
	d.detect = "detect:\n  contain: true\n"
	a1, a2, admin, cl := d.twoAuthorities()
	db := pgOf(t, d)
	var clients struct {
		Clients []struct {
			ID   string `json:"client_id"`
			Name string `json:"name"`
		} `json:"clients"`
	}
	if _, err := call("GET", a1.url()+"/v1/clients", admin, nil, &clients); err != nil || len(clients.Clients) != 1 || clients.Clients[0].Name != "login" {
		t.Fatalf("clients %+v %v", clients.Clients, err)
	}
	clientID := clients.Clients[0].ID
	// Both authorities know the secret (a2's cache of it is warm).
	for i, a := range []*proc{a1, a2} {
		if _, _, st := issueFrom(t, a, cl.Secret, fmt.Sprint(d.pop.MemberID(uint64(i))), fmt.Sprint("login-", i)); st != 200 {
			t.Fatalf("%s: %d before", a.name, st)
		}
	}
	// The holder of the stolen secret asks a1 for tokens of many
	// customers, with no login behind any of them, until a1 refuses.
	for i := 0; ; i++ {
		_, _, st := issueFrom(t, a1, cl.Secret, fmt.Sprint(d.pop.MemberID(uint64(10+i%100))), "")
		if st == 401 {
			t.Logf("a1 refused the secret after %d issuances with no login", i)
			break
		}
		if st != 200 || i > 400 {
			t.Fatalf("issuance %d at a1: %d\n%s", i, st, a1.tail())
		}
	}
	// a2 refuses it too; a2 was never asked for a token with no login.
	var last int
	after := pollUntil(t, 10*time.Second, "a2 refuses the suspended secret", func() bool {
		_, _, last = issueFrom(t, a2, cl.Secret, fmt.Sprint(d.pop.MemberID(1)), "login-1b")
		return last == 401
	})
	t.Logf("suspended at a1; a2 refused the secret %s later (authority.CacheTTL 500ms)", after.Round(time.Millisecond))
	// It stays refused at both, and the store says why.
	for _, a := range []*proc{a1, a2} {
		if _, _, st := issueFrom(t, a, cl.Secret, fmt.Sprint(d.pop.MemberID(2)), "login-2"); st != 401 {
			t.Fatalf("%s: %d after the suspension", a.name, st)
		}
	}
	var rule, target string
	proctestWait(t, 10*time.Second, "the suspend_client action recorded", func() bool {
		return db.QueryRow(`SELECT rule, target FROM detect_actions WHERE action = 'suspend_client' AND error = ''`).Scan(&rule, &target) == nil
	})
	if rule != detect.RuleIssuanceNoLogin || target != clientID {
		t.Fatalf("suspend_client on %q by %q, want %s by %s", target, rule, clientID, detect.RuleIssuanceNoLogin)
	}
}

// An operator's hold by hand at a1 (POST /v1/containment, block_country)
// is enforced by standalone gateways following a1 and following a2, each
// with a GeoIP database; a request from an allowed country is served
// throughout; once the hold's "for" has passed both serve the country
// again.
func TestCountryHoldAcrossReplicas(t *testing.T) {
	c := newCountryHolds(t, map[string]string{"203.0.113.0/24": "CN", "198.51.100.0/24": "KR"})
	a1, a2, admin, gws, member, tok := c.a1, c.a2, c.admin, c.gws, c.member, c.tok
	const cn, kr = "203.0.113.50", "198.51.100.50"
	reachAll(t, time.Now(), 10*time.Second, "served from CN before the hold", gws, func(g *proc) bool { return gatewayServes(g, tok, member, cn) })

	const hold = 8 * time.Second
	var h struct {
		ID     string    `json:"id"`
		Target string    `json:"target"`
		Actor  string    `json:"actor"`
		Until  time.Time `json:"until"`
	}
	placed := time.Now()
	if st, err := call("POST", a1.url()+"/v1/containment", admin, map[string]string{"action": "block_country", "target": "CN",
		"for": hold.String(), "reason": "tokens replayed from CN, incident 42"}, &h); err != nil || st != 201 {
		t.Fatalf("hold: %d %v", st, err)
	}
	var self struct {
		Name   string `json:"name"`
		Person string `json:"person"`
	}
	if _, err := call("GET", a1.url()+"/v1/credentials/self", admin, nil, &self); err != nil {
		t.Fatal(err)
	}
	actor := "credential:" + self.Name
	if self.Person != "" {
		actor = self.Person
	}
	if h.Target != "CN" || h.Actor != actor {
		t.Fatalf("hold %+v, want target CN and actor %s", h, actor)
	}
	on := reachAll(t, placed, hold, "refused from CN as blocked_source", gws, func(g *proc) bool { return gatewayRefuses(g, tok, member, cn, "blocked_source") })
	t.Logf("hold placed at a1: enforced at g1 (follows a1) after %s, at g2 (follows a2) after %s",
		on["g1"].Round(time.Millisecond), on["g2"].Round(time.Millisecond))
	for _, g := range gws {
		if !gatewayServes(g, tok, member, kr) {
			t.Fatalf("%s refuses an allowed country during the hold", g.name)
		}
	}
	// a2 lists the hold as a1 placed it.
	var list struct {
		Holds []struct {
			ID    string `json:"id"`
			Actor string `json:"actor"`
		} `json:"holds"`
	}
	if _, err := call("GET", a2.url()+"/v1/containment", admin, nil, &list); err != nil || len(list.Holds) != 1 || list.Holds[0].ID != h.ID || list.Holds[0].Actor != h.Actor {
		t.Fatalf("a2 lists %+v (%v), want %s", list.Holds, err, h.ID)
	}
	// Still in force until its end, lifted after it at both.
	for time.Until(h.Until) > time.Second {
		for _, g := range gws {
			if !gatewayRefuses(g, tok, member, cn, "blocked_source") {
				t.Fatalf("%s served CN %s before the hold's end", g.name, time.Until(h.Until))
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	off := reachAll(t, h.Until, 5*time.Second, "served from CN after the hold's end", gws, func(g *proc) bool { return gatewayServes(g, tok, member, cn) })
	t.Logf("hold lifted at g1 %s and at g2 %s after its end", off["g1"].Round(time.Millisecond), off["g2"].Round(time.Millisecond))
}

// countryHolds is two authorities, each followed by a standalone gateway
// (g1 follows a1, g2 follows a2) with a GeoIP database of nets (prefix →
// country), and a customer's token from a1.
type countryHolds struct {
	d              *deployment
	a1, a2, g1, g2 *proc
	gws            []*proc
	admin          string
	tokFile, extra string // the gateways' credential and config lines, for one more
	member, tok    string
}

func newCountryHolds(t *testing.T, nets map[string]string) countryHolds {
	t.Helper()
	c := countryHolds{d: newDeployment(t, direct)}
	geo := filepath.Join(c.d.dir, "geo.mmdb")
	db, err := geodb.Countries(nets)
	if err != nil {
		t.Fatal(err)
	}
	if err := geodb.Write(geo, "custos-test", db); err != nil {
		t.Fatal(err)
	}
	var cl struct {
		Secret string `json:"client_secret"`
	}
	c.a1, c.a2, c.admin, cl = c.d.twoAuthorities()
	c.tokFile = filepath.Join(c.d.dir, "a1", "admin-token")
	c.extra = "  geoip: [" + geo + "]\n"
	c.g1 = c.d.gatewayWith("g1", c.tokFile, c.extra, c.a1)
	c.g2 = c.d.gatewayWith("g2", c.tokFile, c.extra, c.a2)
	c.gws = []*proc{c.g1, c.g2}
	for _, g := range c.gws {
		g.waitReady(30 * time.Second)
	}
	c.member = fmt.Sprint(c.d.pop.MemberID(7))
	var st int
	c.tok, _, st = issueFrom(t, c.a1, cl.Secret, c.member, "s-7")
	if st != 200 {
		t.Fatalf("issue: %d", st)
	}
	return c
}
