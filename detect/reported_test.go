package detect

import (
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
)

// Events read from a log carry the log's claims: a claimed not_issued is a
// medium reported_not_issued finding, never the critical not_issued one, and
// claimed key or decoy reasons raise nothing custos does not know itself.
func TestReportedClaims(t *testing.T) {
	claim := func(r event.Reason, mod func(*event.Access)) []event.Access {
		return users(5, func(i int, a *event.Access) {
			a.Reason, a.Verdict, a.Reported = r, event.Deny, event.ReportedLog
			a.Token.KID = "kid-custos-never-knew"
			if mod != nil {
				mod(a)
			}
		})
	}
	cases := []struct {
		name   string
		cfg    func(*Config)
		setup  func(*Engine)
		events []event.Access
		want   map[string]Severity // rule → severity of its alerts; rules absent must not fire
	}{
		{"ok/claimed_not_issued_is_reported", nil, nil, claim(event.ReasonNotIssued, nil), map[string]Severity{RuleReportedNotIssued: Medium}},
		{"ok/claimed_not_issued_no_kid", nil, nil, claim(event.ReasonNotIssued, func(a *event.Access) { a.Token.KID = "" }), map[string]Severity{RuleReportedNotIssued: Medium}},
		{"ok/claimed_not_issued_any_reported_value", nil, nil, claim(event.ReasonNotIssued, func(a *event.Access) { a.Reported = "LOG" }), map[string]Severity{RuleReportedNotIssued: Medium}},
		{"ok/severity_configurable", func(c *Config) { c.ReportedNotIssued.Severity = Low }, nil, claim(event.ReasonNotIssued, nil), map[string]Severity{RuleReportedNotIssued: Low}},
		{"fail/disabled", func(c *Config) { c.ReportedNotIssued.Disabled = true }, nil, claim(event.ReasonNotIssued, nil), map[string]Severity{}},
		{"fail/not_issued_off_does_not_hide_reported", func(c *Config) { c.NotIssued.Disabled = true }, nil, claim(event.ReasonNotIssued, nil), map[string]Severity{RuleReportedNotIssued: Medium}},
		{"ok/gateway_not_issued_is_critical", nil, nil, claim(event.ReasonNotIssued, func(a *event.Access) { a.Reported = "" }), map[string]Severity{RuleNotIssued: Critical}},
		{"fail/claimed_revoked_key", nil, nil, claim(event.ReasonRevokedKey, nil), map[string]Severity{}},
		{"ok/revoked_key_custos_knows", nil, func(e *Engine) { e.SetKeyState("k1", keys.Revoked, t0.Add(-time.Hour)) },
			claim(event.ReasonRevokedKey, func(a *event.Access) { a.Token.KID = "k1" }), map[string]Severity{RuleRevokedKey: Critical}},
		{"fail/claimed_decoy_reason", nil, nil, claim(event.ReasonDecoySubject, nil), map[string]Severity{}},
		{"ok/decoy_subject_custos_knows", func(c *Config) { c.DecoySubject.Subjects = []string{"999999"} }, nil,
			claim(event.ReasonNone, func(a *event.Access) { a.Subject = "999999" }), map[string]Severity{RuleDecoySubject: Critical}},
		{"fail/claimed_unknown_key", nil, nil, claim(event.ReasonUnknownKey, nil), map[string]Severity{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, tc.cfg)
			if tc.setup != nil {
				tc.setup(e)
			}
			for _, a := range tc.events {
				e.Process(a)
			}
			got := map[string]Severity{}
			for _, a := range e.Alerts() {
				got[a.Rule] = a.Severity
			}
			for rule, sev := range tc.want {
				if got[rule] != sev {
					t.Errorf("%s: severity %q, want %q (alerts %v)", rule, got[rule], sev, got)
				}
			}
			for rule := range got {
				if _, ok := tc.want[rule]; !ok {
					t.Errorf("%s fired, want not (alerts %v)", rule, got)
				}
			}
		})
	}
}

// Custom rules see "reported": a rule can tell a log's claim from a
// gateway's own check, natively compiled and through CEL alike.
func TestRuleReported(t *testing.T) {
	rules := "rules:\n" +
		"  - name: own_not_issued\n    expr: 'reason == \"not_issued\" && reported == \"\"'\n" +
		"  - name: log_not_issued\n    expr: 'reason == \"not_issued\" && reported == \"log\"'\n" +
		"  - name: log_cel\n    expr: 'reported.startsWith(\"lo\") && size(reported) == 3'\n"
	for _, tc := range []struct {
		reported string
		want     map[string]bool
	}{
		{"", map[string]bool{"own_not_issued": true}},
		{event.ReportedLog, map[string]bool{"log_not_issued": true, "log_cel": true}},
	} {
		e := newEngine(t, func(c *Config) { c.NotIssued.Disabled, c.ReportedNotIssued.Disabled = true, true })
		if err := e.LoadRulesFrom("r", strings.NewReader(rules)); err != nil {
			t.Fatal(err)
		}
		a := ev(0)
		a.Reason, a.Verdict, a.Reported = event.ReasonNotIssued, event.Deny, tc.reported
		e.Process(a)
		got := rulesOf(e)
		for _, r := range []string{"own_not_issued", "log_not_issued", "log_cel"} {
			if (got[r] > 0) != tc.want[r] {
				t.Errorf("reported %q: rule %s fired=%v, want %v", tc.reported, r, got[r] > 0, tc.want[r])
			}
		}
	}
}
