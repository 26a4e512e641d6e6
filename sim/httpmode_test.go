package sim

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/sim/scenario"
)

// replayHTTPTest runs the HTTP replay at scale 0.00002, edited by edit,
// and closes it when the test ends.
func replayHTTPTest(t *testing.T, edit func(*scenario.Config)) (*HTTPReplay, Report) {
	t.Helper()
	return replayHTTPWorld(t, HTTPOptions{}, edit)
}

// replayHTTPWorld is replayHTTPTest in the world o.
func replayHTTPWorld(t *testing.T, o HTTPOptions, edit func(*scenario.Config)) (*HTTPReplay, Report) {
	t.Helper()
	cfg := scenario.DefaultConfig()
	cfg.Scale = 0.00002
	if edit != nil {
		edit(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	o.Scenario, o.Data = cfg, t.TempDir()
	h, err := StartHTTP(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	rep, err := h.Run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h, rep
}

// The breach over real HTTP: authority, gateway, SCIM offboarding, detection
// and forensics, against a signature-only gateway on the same requests.
func TestHTTPReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("HTTP replay skipped in -short mode")
	}
	h, rep := replayHTTPTest(t, nil)
	if len(rep.Worlds) != 2 {
		t.Fatalf("worlds %d", len(rep.Worlds))
	}
	base, cust := rep.Worlds[0], rep.Worlds[1]
	if base.ForgedServed == 0 || base.SubjectsExposed == 0 {
		t.Fatalf("baseline over HTTP served nothing: %+v", base)
	}
	if cust.ForgedSent != base.ForgedSent || cust.ForgedSent == 0 {
		t.Fatalf("worlds saw different streams: %d vs %d", cust.ForgedSent, base.ForgedSent)
	}
	if cust.ForgedServed != 0 || cust.SubjectsExposed != 0 {
		t.Fatalf("custos over HTTP served %d forged requests", cust.ForgedServed)
	}
	tl := h.sc.Timeline()
	if cust.KeyDied.Before(tl.CustodianLeaves) || cust.KeyDied.After(tl.FirstForged) {
		t.Fatalf("key died %s, want at the departure %s", cust.KeyDied, tl.CustodianLeaves)
	}
	k, ok := h.Server.Keys.Lookup(h.stolenK.KID)
	if !ok || k.State != keys.Revoked {
		t.Fatalf("the copied key is %v after its custodian left", k.State)
	}
	if cust.FirstAlert.IsZero() || cust.FirstAlertRule == "" {
		t.Fatalf("no alert on the forged requests, or without its rule: %v %q", cust.FirstAlert, cust.FirstAlertRule)
	}
	if cust.FirstBehaviour.IsZero() || !behaviourRule(cust.FirstBehaviourRule) {
		t.Errorf("first behaviour alert %v (%q): the forged crawl from abroad raises one", cust.FirstBehaviour, cust.FirstBehaviourRule)
	}
	// The key died at the departure, before the attack: contained from
	// its first request, never before it.
	if !cust.Containment.Equal(tl.FirstForged) {
		t.Errorf("contained at %v, want the attack's first request %v", cust.Containment, tl.FirstForged)
	}
	for _, row := range NewMatrix(rep).Rows {
		if row.ContainmentSecs != nil && *row.ContainmentSecs < 0 {
			t.Errorf("%s: containment %v s after the start", row.World, *row.ContainmentSecs)
		}
	}
	if cust.TimeToScope == 0 {
		t.Fatalf("no scope: %v", cust.Notes)
	}
}

// The adapting attackers over real HTTP: forged crawls (distributed, slow)
// are refused by the gateway and served by the signature-only one; tokens
// issued with the stolen client secret are real and served, and the
// authority's issuance feed raises issuance alerts on the client; customer
// tokens replayed from abroad are served and seen as foreign.
func TestHTTPReplayVariants(t *testing.T) {
	if testing.Short() {
		t.Skip("HTTP replay skipped in -short mode")
	}
	for _, tc := range []struct {
		v     scenario.Variant
		real  bool   // real tokens: custos serves them
		rule  string // an alert custos must raise
		other string // or this one
	}{
		{scenario.StolenClientSecret, true, detect.RuleIssuanceNoLogin, detect.RuleIssuanceSequence},
		{scenario.Distributed, false, detect.RuleIDCoverage, detect.RuleRevokedKey},
		{scenario.LowAndSlow, false, detect.RuleIDCoverage, detect.RuleRevokedKey},
		{scenario.ReplayedTokens, true, detect.RuleForeignOrigin, ""},
	} {
		t.Run(string(tc.v), func(t *testing.T) {
			h, rep := replayHTTPTest(t, func(c *scenario.Config) {
				c.Attacker = tc.v
				c.ReplayedTokens = 500_000 // 10 at this scale
			})
			base, cust := rep.Worlds[0], rep.Worlds[1]
			if base.ForgedSent == 0 || base.ForgedServed == 0 || cust.ForgedSent != base.ForgedSent {
				t.Fatalf("attack requests: baseline served %d of %d, custos saw %d", base.ForgedServed, base.ForgedSent, cust.ForgedSent)
			}
			// Forged tokens: the baseline serves them all, custos none. Real
			// ones (decoys aside, which the authority refuses to issue):
			// both serve the same, every token the authority issued.
			if tc.real && cust.ForgedServed != base.ForgedServed || !tc.real && (cust.ForgedServed != 0 || base.ForgedServed != base.ForgedSent) {
				t.Fatalf("custos served %d, baseline %d of %d attack requests (real tokens %v)", cust.ForgedServed, base.ForgedServed, cust.ForgedSent, tc.real)
			}
			if !base.FirstAlert.IsZero() {
				t.Errorf("baseline has the stolen-key attack's historical alert on %s", tc.v)
			}
			rules := map[string]bool{}
			for _, a := range h.Server.Detect.Alerts() {
				rules[a.Rule] = true
			}
			if !rules[tc.rule] && !rules[tc.other] || cust.FirstAlert.IsZero() {
				t.Fatalf("no %s or %s alert (first alert %v); rules %v", tc.rule, tc.other, cust.FirstAlert, rules)
			}
			// Issuance alerts on the stolen secret's tokens are the attack's,
			// though raised before the replay learns the token's jti.
			h.falseRules.Range(func(k, _ any) bool {
				if tc.v == scenario.StolenClientSecret && strings.HasPrefix(k.(string), "issuance_") {
					t.Errorf("the attack's issuance alert %q counted as a false alarm", k)
				}
				return true
			})
			t.Logf("served %d of %d, alerts %v, false alarms %d in %d", cust.ForgedServed, cust.ForgedSent, rules, cust.FalseAlarms, cust.NormalRequests)
		})
	}
}

// Provenance only observed, containment on, and the attacker's key live as
// far as custody knows: the first forged token passes, detection's not_issued
// alert revokes the key, and the gateway refuses the crawl from then on.
func TestHTTPReplayObserveContained(t *testing.T) {
	if testing.Short() {
		t.Skip("HTTP replay skipped in -short mode")
	}
	o, err := HTTPWorld(DefaultWorlds()[2])
	if err != nil {
		t.Fatal(err)
	}
	h, rep := replayHTTPWorld(t, o, nil)
	cust := rep.Worlds[1]
	if !cust.ContainmentOn || cust.Containment.IsZero() {
		t.Fatalf("not contained: %+v", cust)
	}
	if cust.ForgedServed == 0 {
		t.Errorf("observe mode served no forged request: the key was not live")
	}
	var records int64
	for _, n := range cust.Records {
		records += n
	}
	if records > GoalMaxRecords || cust.ForgedServed >= cust.ForgedSent {
		t.Fatalf("%d records exposed, %d of %d served", records, cust.ForgedServed, cust.ForgedSent)
	}
	revoked := false
	for _, a := range h.Server.Detect.Actions() {
		if a.Action == detect.ActionRevokeKey && a.Rule == detect.RuleNotIssued && a.Target == h.stolenK.KID && a.Error == "" {
			revoked = true
		}
	}
	if k, _ := h.Server.Keys.Lookup(h.stolenK.KID); !revoked || k.State != keys.Revoked {
		t.Fatalf("key %s is %v, revoke_key on not_issued carried out: %v", h.stolenK.KID, k.State, revoked)
	}
	row := NewMatrix(rep).Rows[1]
	if row.ContainmentSecs == nil || *row.ContainmentSecs < 0 {
		t.Fatalf("containment %v", row.ContainmentSecs)
	}
	t.Logf("served %d of %d, %d records, contained %.3f s after the start; %v", cust.ForgedServed, cust.ForgedSent, records, *row.ContainmentSecs, cust.Notes)
}

// The no-lifecycle world over HTTP: the custodian is not linked to the key,
// so his departure leaves it alone; the server, on simulated time, rotates
// it out on its schedule and retires it MaxTokenTTL + RetireLeeway later.
// The forged tokens are refused not_issued until then, and for the dead key
// after: the reason switches at the schedule, not at the departure.
func TestHTTPReplayNoLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("HTTP replay skipped in -short mode")
	}
	h, rep := replayHTTPWorld(t, HTTPOptions{NoLifecycle: true, NoBaseline: true}, func(c *scenario.Config) {
		// The departure half a day before the first forged request, the
		// tests three days long: the key dies among them.
		c.CustodianLeaves = c.TestsStart.Add(-12 * time.Hour)
		c.NormalStart = c.TestsStart.Add(-11 * time.Hour)
		c.CrawlStart = c.TestsStart.Add(72 * time.Hour)
		c.CrawlEnd = c.CrawlStart.Add(72 * time.Hour)
		c.NormalEnd = c.CrawlEnd
	})
	cust := rep.Worlds[0]
	tl := h.sc.Timeline()
	cfg := h.Server.Config
	due := tl.CustodianLeaves.Add(cfg.Keys.RotateEvery + cfg.Tokens.MaxTTL + keys.DefaultRetireLeeway)
	if cust.ForgedSent == 0 || cust.ForgedServed != 0 {
		t.Fatalf("custos served %d of %d forged requests", cust.ForgedServed, cust.ForgedSent)
	}
	k, ok := h.Server.Keys.Lookup(h.stolenK.KID)
	if !ok || k.State != keys.Retired {
		t.Fatalf("the copied key is %v, want retired by the schedule", k.State)
	}
	if !cust.KeyDied.After(tl.CustodianLeaves.Add(cfg.Keys.RotateEvery-keyLead)) || cust.KeyDied.After(due.Add(2*schedStep)) {
		t.Fatalf("key died %s, want by the schedule at %s (departure %s)", cust.KeyDied, due, tl.CustodianLeaves)
	}
	niFirst, niLast := h.cw.span(string(event.ReasonNotIssued))
	deadFirst, _ := h.cw.span(string(event.ReasonRevokedKey))
	if uf, _ := h.cw.span(string(event.ReasonUnknownKey)); deadFirst.IsZero() || (!uf.IsZero() && uf.Before(deadFirst)) {
		deadFirst = uf
	}
	if niFirst.IsZero() || deadFirst.IsZero() {
		t.Fatalf("refusals not_issued from %v, for the dead key from %v: want both (%v)", niFirst, deadFirst, cust.Notes)
	}
	if !niLast.Before(deadFirst) || deadFirst.Before(cust.KeyDied) || niLast.After(due.Add(2*schedStep)) {
		t.Errorf("not_issued %v..%v, dead key from %v: want the switch at the schedule %s", niFirst, niLast, deadFirst, due)
	}
}

// Token requests over HTTP name their caller, as a proxy in front of the
// authority would: the login service's servers for customers' logins, the
// attacker's own machine for the stolen secret. The authority believes the
// replay's X-Forwarded-For (trusted_proxies), so the stolen secret's first
// token, asked for from a network the client never called from, raises
// issuance_network naming the attacker (at this scale, once the client
// has its history of 100 issuances); without the header every caller is
// the replay's loopback address and the rule cannot see it.
func TestHTTPReplayIssuanceCaller(t *testing.T) {
	if testing.Short() {
		t.Skip("HTTP replay skipped in -short mode")
	}
	edit := func(c *scenario.Config) { c.Attacker = scenario.StolenClientSecret }
	attackerNet := func(h *HTTPReplay, addr string) bool {
		ip, err := netipParse(addr)
		if err != nil {
			return false
		}
		for _, n := range h.attackNets {
			if n.Prefix.Contains(ip) {
				return true
			}
		}
		return false
	}
	for _, direct := range []bool{false, true} {
		t.Run(map[bool]string{false: "forwarded", true: "direct"}[direct], func(t *testing.T) {
			h, rep := replayHTTPWorld(t, HTTPOptions{direct: direct}, edit)
			cust := rep.Worlds[1]
			var attack, other []string
			for _, a := range h.Server.Detect.Alerts() {
				if a.Rule != detect.RuleIssuanceNetwork {
					continue
				}
				if attackerNet(h, a.Attrs["src_ip"]) {
					attack = append(attack, a.Attrs["src_ip"])
				} else {
					other = append(other, a.Attrs["src_ip"])
				}
			}
			if len(other) > 0 {
				t.Errorf("issuance_network on callers that are not the attacker's: %v", other)
			}
			if direct {
				if len(attack) > 0 {
					t.Errorf("issuance_network named the attacker %v with no X-Forwarded-For", attack)
				}
				return
			}
			if len(attack) == 0 {
				t.Fatalf("no issuance_network alert on the attacker's network; first alert %q at %v", cust.FirstAlertRule, cust.FirstAlert)
			}
			// The replay counts it as the attack's alert, not a false alarm.
			h.falseRules.Range(func(k, _ any) bool {
				if strings.HasPrefix(k.(string), detect.RuleIssuanceNetwork+" ") {
					t.Errorf("issuance_network counted as a false alarm: %q", k)
				}
				return true
			})
			t.Logf("issuance_network on %v; first alert %s (%s); false alarms %d in %d", attack, cust.FirstAlertRule, cust.AlertDelay, cust.FalseAlarms, cust.NormalRequests)
		})
	}
}

// An issuance alert arrives while the authority answers the attacker's token
// request, before the answer names the token's jti, and after the replay has
// moved on: it is timed at the request that asked for the token.
func TestHTTPIssuanceAlertTime(t *testing.T) {
	h := &HTTPReplay{attackNets: []scenario.Network{{Prefix: netip.MustParsePrefix("45.76.89.0/24"), Attacker: true}}}
	asked := time.Date(2025, 6, 24, 0, 0, 0, 0, time.UTC)
	h.asked.Store("45.76.89.186 19", asked.UnixNano())
	h.simNow.Store(asked.Add(time.Hour).UnixNano()) // where the driver has got to
	h.onAlert(detect.Alert{Rule: detect.RuleIssuanceNetwork, Attrs: map[string]string{
		"client": "cl", "subject": "19", "jti": "not-yet-known", "src_ip": "45.76.89.186", "client_ip": "45.76.89.186"}})
	if h.falseAl.Load() != 0 {
		t.Fatal("the attacker's issuance alert counted as a false alarm")
	}
	if got := time.Unix(0, h.firstAlert).UTC(); !got.Equal(asked) || h.firstRule != detect.RuleIssuanceNetwork {
		t.Fatalf("first alert %s at %v, want %s at the token request %v", h.firstRule, got, detect.RuleIssuanceNetwork, asked)
	}
}
