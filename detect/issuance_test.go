package detect

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// loginService issues n tokens one a second from t, each after a login of
// its own (a session per login), for random members, from the login
// service's two servers.
func loginService(e *Engine, t time.Time, n int, rng *rand.Rand) time.Time {
	for i := range n {
		sub := strconv.Itoa(1_000_000 + rng.IntN(300_000))
		e.Issued(Issuance{
			Time: t, RequestID: "n" + strconv.Itoa(i), Client: "cl-login", Subject: sub,
			Session: "s-" + strconv.Itoa(i) + "-" + sub, Caller: "10.20.0." + strconv.Itoa(7+i%2), ClientIP: "211.234.1.1",
		})
		t = t.Add(time.Duration(500+rng.IntN(1000)) * time.Millisecond)
	}
	return t
}

// TestIssuance: a login service's ordinary issuance raises nothing; a
// stolen client secret asking for tokens is seen from each side the
// attacker controls (sessions, order, network, rate), and with nothing
// else wrong only by the one it gets wrong.
func TestIssuance(t *testing.T) {
	type atk struct {
		session func(i int) string
		subject func(i int) string
		caller  string
		every   time.Duration
		n       int
	}
	seq := func(i int) string { return strconv.Itoa(2_000_000 + i) }
	random := func(i int) string { return strconv.Itoa(1_000_000 + (i*7919)%300_000) }
	fresh := func(i int) string { return "forged-" + strconv.Itoa(i) }
	cases := []struct {
		name string
		a    atk
		want []string // rules that must alert; every other issuance rule must not
	}{
		{"stolen secret, no session, in order, from abroad", atk{func(int) string { return "" }, seq, "203.0.113.9", 50 * time.Millisecond, 200},
			[]string{RuleIssuanceNoLogin, RuleIssuanceSequence, RuleIssuanceNetwork}},
		{"one made-up session for everyone", atk{func(int) string { return "s-1" }, random, "10.20.0.7", time.Second, 100},
			[]string{RuleIssuanceNoLogin}},
		{"fresh made-up sessions, in order", atk{fresh, seq, "10.20.0.8", time.Second, 100},
			[]string{RuleIssuanceSequence}},
		{"fresh sessions, random members, from an unusual network", atk{fresh, random, "198.51.100.20", time.Second, 30},
			[]string{RuleIssuanceNetwork}},
		{"fresh sessions, random members, usual network, 20 a second", atk{fresh, random, "10.20.0.7", 50 * time.Millisecond, 3000},
			[]string{RuleIssuanceRate}},
		{"IPv6 caller outside the history", atk{fresh, random, "2001:db8::9", time.Second, 5},
			[]string{RuleIssuanceNetwork}},
		{"the same, slowly, from the usual network", atk{fresh, random, "10.20.0.8", time.Second, 300}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, nil)
			at := loginService(e, t0, 6000, rand.New(rand.NewPCG(3, 4)))
			if n := len(e.Alerts()); n != 0 {
				t.Fatalf("%d alerts on a login service's ordinary issuance: %v", n, rulesOf(e))
			}
			start := at
			for i := range tc.a.n {
				e.Issued(Issuance{Time: at, RequestID: "a" + strconv.Itoa(i), Client: "cl-login", Subject: tc.a.subject(i),
					Session: tc.a.session(i), Caller: tc.a.caller, JTI: "j" + strconv.Itoa(i)})
				at = at.Add(tc.a.every)
			}
			got := rulesOf(e)
			for _, r := range []string{RuleIssuanceNoLogin, RuleIssuanceSequence, RuleIssuanceNetwork, RuleIssuanceRate} {
				want := false
				for _, w := range tc.want {
					want = want || w == r
				}
				if (got[r] > 0) != want {
					t.Errorf("%s: %d alerts, want any: %v (all: %v)", r, got[r], want, got)
				}
			}
			for _, a := range e.Alerts() {
				if a.Entity != "client:cl-login" || a.Attrs["client"] != "cl-login" || a.FirstSeen.Sub(start) > 5*time.Minute || len(a.Samples) == 0 || a.Samples[0][0] != 'a' {
					t.Errorf("alert %s on %s at +%v, samples %v: want the client, within 5 min, the attacker's requests", a.Rule, a.Entity, a.FirstSeen.Sub(start), a.Samples)
				}
			}
		})
	}
	t.Run("service tokens and disabled are not judged", func(t *testing.T) {
		e := newEngine(t, func(c *Config) { c.Issuance.Disabled = true })
		e2 := newEngine(t, nil)
		for i := range 500 {
			is := Issuance{Time: t0.Add(time.Duration(i) * time.Millisecond), Client: "cl-svc", Subject: seq(i), Caller: "203.0.113.9"}
			e.Issued(is)
			is.Subject = "cl-svc"
			e2.Issued(is)
		}
		if len(e.Alerts())+len(e2.Alerts()) != 0 {
			t.Fatalf("alerts %v %v", rulesOf(e), rulesOf(e2))
		}
	})
}
