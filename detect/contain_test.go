package detect

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
)

// proportional is the policy the authority sets with containment on.
func proportional(c *Config) {
	c.Containment = map[string]ContainPolicy{
		RuleNotIssued:     {Action: ActionRevokeKey},
		RuleDecoySubject:  {Actions: []Action{ActionRevokeKey, ActionRevokeToken, ActionForceRelogin, ActionBlockSource}, For: time.Hour},
		RuleForeignOrigin: {Action: ActionBlockSource, For: time.Hour},
	}
}

// decoyHit is a customer with their own issued token asking for a decoy member.
func decoyHit(i int, jti, sub, ip string) event.Access {
	a := ev(i)
	a.Token.JTI, a.Token.Sub, a.SrcIP = jti, sub, ip
	a.Subject, a.Reason, a.Verdict, a.Status = "999999", event.ReasonDecoySubject, event.Deny, 401
	return a
}

func calls(r *recorder) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.calls, "; ")
}

// A customer holding a real token cannot get the signing key revoked: not
// with one decoy hit, many, a log line claiming not_issued, nor by repeating
// until the limits give way. What the evidence points at is contained.
func TestContainmentProportional(t *testing.T) {
	t.Run("ok/decoy_with_issued_token", func(t *testing.T) {
		e := newEngine(t, proportional)
		rec := &recorder{}
		e.SetContainment(rec)
		e.Process(decoyHit(0, "jA", "1001", "198.51.100.7"))
		got := calls(rec)
		if strings.Contains(got, "revoke_key") {
			t.Fatalf("a decoy hit with an issued token revoked the key: %s", got)
		}
		for _, want := range []string{"revoke_token jA", "relogin 1001", "block 198.51.100.7/32 2025-06-24T04:00:00Z"} {
			if !strings.Contains(got, want) {
				t.Fatalf("calls %q lack %q", got, want)
			}
		}
		var refused int
		for _, x := range e.Actions() {
			if x.AlertID == "" || x.Rule != RuleDecoySubject || x.Evidence["jti"] != "jA" || x.Evidence["src_ip"] != "198.51.100.7" || x.Evidence["reason"] != "decoy_subject" {
				t.Fatalf("action without its evidence: %+v", x)
			}
			if x.Action == ActionRevokeKey {
				refused++
				if !strings.Contains(x.Error, "evidence does not implicate") {
					t.Fatalf("revoke_key recorded as %+v", x)
				}
			}
		}
		if refused != 1 {
			t.Fatalf("revoke_key not recorded as refused: %+v", e.Actions())
		}
	})
	t.Run("ok/ipv6_source_blocked_alone", func(t *testing.T) {
		e := newEngine(t, proportional)
		rec := &recorder{}
		e.SetContainment(rec)
		e.Process(decoyHit(0, "jA", "1001", "2001:db8::7"))
		if got := calls(rec); !strings.Contains(got, "block 2001:db8::7/128 ") {
			t.Fatalf("calls %q", got)
		}
	})
	t.Run("ok/many_decoys_many_customers", func(t *testing.T) {
		e := newEngine(t, proportional)
		rec := &recorder{}
		e.SetContainment(rec)
		// Every customer's decoy hit is about their own token: each is
		// contained, none reaches the key.
		for i := 0; i < 5; i++ {
			for j := 0; j < 20; j++ {
				e.Process(decoyHit(i*20+j, fmt.Sprintf("j%d", i), fmt.Sprint(1000+i), fmt.Sprintf("198.51.100.%d", i)))
			}
		}
		got := calls(rec)
		if strings.Contains(got, "revoke_key") {
			t.Fatalf("many decoy hits revoked the key: %s", got)
		}
		for i := 0; i < 5; i++ {
			if !strings.Contains(got, fmt.Sprintf("revoke_token j%d", i)) {
				t.Fatalf("customer %d's token not contained: %s", i, got)
			}
		}
	})
	t.Run("fail/forged_log_lines", func(t *testing.T) {
		e := newEngine(t, func(c *Config) {
			proportional(c)
			c.DecoySubject.Subjects = []string{"999999"}
			c.Containment[RuleReportedNotIssued] = ContainPolicy{Action: ActionRevokeKey}
		})
		rec := &recorder{}
		e.SetContainment(rec)
		// A log line can claim anything: not_issued for the live key, a
		// decoy hit from the shop's own address.
		a := notIssued(0, "k1")
		a.Reported = event.ReportedLog
		e.Process(a)
		b := decoyHit(1, "jVictim", "1002", "203.0.113.1")
		b.Reported = event.ReportedLog
		e.Process(b)
		if got := calls(rec); got != "" {
			t.Fatalf("a log's claims were acted on: %s", got)
		}
		if len(e.Actions()) < 4 {
			t.Fatal("refused actions are not recorded")
		}
		for _, x := range e.Actions() {
			if !strings.Contains(x.Error, "log's claim") {
				t.Fatalf("action on a log's claim: %+v", x)
			}
		}
	})
	t.Run("fail/cel_rule_asks_for_the_key", func(t *testing.T) {
		e := newEngine(t, nil)
		rec := &recorder{}
		e.SetContainment(rec)
		if err := e.LoadRulesFrom("r", strings.NewReader("rules:\n  - name: decoyish\n    expr: subject == '999999'\n    contain: {action: revoke_key}\n")); err != nil {
			t.Fatal(err)
		}
		e.Process(decoyHit(0, "jA", "1001", "198.51.100.7"))
		if got := calls(rec); got != "" {
			t.Fatalf("a rule revoked the key on a decoy hit: %s", got)
		}
	})
	t.Run("ok/forged_token_revokes_key_not_subject", func(t *testing.T) {
		e := newEngine(t, proportional)
		rec := &recorder{}
		e.SetContainment(rec)
		a := notIssued(0, "k1")
		a.Subject = "999999"
		e.Process(a)
		got := calls(rec)
		if !strings.Contains(got, "revoke_key k1") || strings.Contains(got, "relogin") {
			t.Fatalf("calls %q: want the key revoked and the forged subject left alone", got)
		}
	})
	t.Run("fail/rapid_repeats_rate_limited", func(t *testing.T) {
		e := newEngine(t, func(c *Config) {
			proportional(c)
			c.ContainmentLimits = map[Action]RateLimit{ActionRevokeKey: {Max: 1, Per: time.Hour}, ActionBlockSource: {Max: 3, Per: time.Minute}}
		})
		rec := &recorder{}
		e.SetContainment(rec)
		for i := 0; i < 10; i++ {
			e.Process(notIssued(i, fmt.Sprintf("k%d", i)))
			e.Process(decoyHit(100+i, fmt.Sprintf("j%d", i), fmt.Sprint(2000+i), fmt.Sprintf("198.51.100.%d", i)))
		}
		got := calls(rec)
		if n := strings.Count(got, "revoke_key"); n != 1 {
			t.Fatalf("%d keys revoked within the limit of 1: %s", n, got)
		}
		if n := strings.Count(got, "block "); n != 3 {
			t.Fatalf("%d blocks within the limit of 3: %s", n, got)
		}
		if n := strings.Count(got, "revoke_token"); n != 10 {
			t.Fatalf("%d tokens revoked: %s", n, got)
		}
		var limited, alerts int
		for _, x := range e.Actions() {
			if strings.Contains(x.Error, RuleContainmentRateLimited) {
				limited++
			}
		}
		for _, a := range e.Alerts() {
			if a.Rule == RuleContainmentRateLimited {
				alerts++
			}
		}
		if limited != 9+7 || alerts != 2 {
			t.Fatalf("%d actions rate limited, %d alerts %s", limited, alerts, RuleContainmentRateLimited)
		}
	})
	t.Run("ok/limit_window_passes", func(t *testing.T) {
		now := t0
		e, err := New(Config{Containment: map[string]ContainPolicy{RuleNotIssued: {Action: ActionRevokeKey}},
			ContainmentLimits: map[Action]RateLimit{ActionRevokeKey: {Max: 1, Per: time.Minute}}}, func() time.Time { return now })
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{}
		e.SetContainment(rec)
		e.Process(notIssued(0, "k1"))
		e.Process(notIssued(1, "k2"))
		now = now.Add(time.Minute)
		e.Process(notIssued(2, "k3"))
		if got := calls(rec); got != "revoke_key k1; revoke_key k3" {
			t.Fatalf("calls %q", got)
		}
	})
	t.Run("fail/policies", func(t *testing.T) {
		for _, p := range []ContainPolicy{{}, {Actions: []Action{"nuke"}}, {Actions: []Action{ActionBlockSource}}, {Action: ActionBlockSource, For: 30 * 24 * time.Hour}} {
			if _, err := New(Config{Containment: map[string]ContainPolicy{"x": p}}, clock); err == nil {
				t.Errorf("policy %+v accepted", p)
			}
		}
		if _, err := New(Config{ContainmentLimits: map[Action]RateLimit{"nuke": {Max: 1, Per: time.Second}}}, clock); err == nil {
			t.Error("limit of an unknown action accepted")
		}
	})
	_ = context.Background
}
