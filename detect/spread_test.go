package detect

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
)

// replayed is customer i's own token, read from country cc, each from a
// network of its own: what a replay of copied tokens from abroad looks like.
func replayed(i int, cc string) event.Access {
	a := ev(i)
	sub := strconv.Itoa(5000 + i*7)
	a.Subject, a.Token.Sub, a.Token.JTI = sub, sub, "j-"+sub
	a.Path = "/v1/members/" + sub + "/addresses"
	a.Country, a.ASN = cc, 16509
	a.SrcIP = "18.204." + strconv.Itoa(i%250) + ".9"
	return a
}

// TestForeignSpread: customer data of N distinct subjects read from one
// foreign country within the window, with tokens that passed every check,
// raises foreign_spread on the country; N-1 does not, nor home traffic,
// nor refused, forged, tokenless or reported requests.
func TestForeignSpread(t *testing.T) {
	const n = DefaultSpreadThreshold
	feed := func(e *Engine, k int, mod func(a *event.Access)) {
		for i := 0; i < k; i++ {
			a := replayed(i, "US")
			if mod != nil {
				mod(&a)
			}
			e.Process(a)
		}
	}
	t.Run("ok/n_subjects", func(t *testing.T) {
		e := newEngine(t, nil)
		feed(e, n, nil)
		got := alertsOf(e, RuleForeignSpread)
		if len(got) != 1 || got[0].Entity != "country:US" || got[0].Severity != High {
			t.Fatalf("alerts %+v, want one foreign_spread on country:US", got)
		}
		if !strings.Contains(got[0].Summary, "20 distinct subjects") || got[0].Attrs["country"] != "US" || got[0].Attrs["jti"] == "" {
			t.Fatalf("alert %+v", got[0])
		}
	})
	t.Run("fail/n_minus_1", func(t *testing.T) {
		e := newEngine(t, nil)
		feed(e, n-1, nil)
		feed(e, n-1, nil) // the same subjects again count once
		if got := alertsOf(e, RuleForeignSpread); len(got) != 0 {
			t.Fatalf("alerts %+v for %d subjects", got, n-1)
		}
	})
	t.Run("fail/slower_than_window", func(t *testing.T) {
		e := newEngine(t, nil)
		feed(e, n, func(a *event.Access) {
			i, _ := strconv.Atoi(strings.TrimPrefix(a.RequestID, "r"))
			a.Time = t0.Add(time.Duration(i) * DefaultSpreadWindow / time.Duration(n-2))
		})
		if got := alertsOf(e, RuleForeignSpread); len(got) != 0 {
			t.Fatalf("alerts %+v for %d subjects over more than the window", got, n)
		}
	})
	for _, tc := range []struct {
		name string
		mut  func(*Config)
		mod  func(a *event.Access)
	}{
		{"fail/home_country", nil, func(a *event.Access) { a.Country = "KR" }},
		{"fail/allowed_country", func(c *Config) { c.ForeignOrigin.Allowed = []string{"KR", "US"} }, nil},
		{"fail/allowed_on_route", func(c *Config) {
			c.ForeignOrigin.Routes = map[string][]string{"/v1/members/{id}/addresses": {"KR", "US"}}
		}, nil},
		{"fail/refused", nil, func(a *event.Access) {
			a.Verdict, a.Reason, a.Status = event.Deny, event.ReasonSubjectMismatch, 401
		}},
		{"fail/forged_observed", nil, func(a *event.Access) { a.Reason = event.ReasonNotIssued }},
		{"fail/no_token", nil, func(a *event.Access) { a.Token = event.Token{} }},
		{"fail/reported", nil, func(a *event.Access) { a.Reported = "cloudfront" }},
		{"fail/disabled", func(c *Config) { c.ForeignSpread.Disabled = true }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, tc.mut)
			feed(e, 3*n, tc.mod)
			if got := alertsOf(e, RuleForeignSpread); len(got) != 0 {
				t.Fatalf("alerts %+v", got)
			}
		})
	}
	t.Run("ok/countries_apart", func(t *testing.T) {
		e := newEngine(t, nil)
		for i := 0; i < n; i++ {
			cc := "US"
			if i%2 == 1 {
				cc = "SG"
			}
			e.Process(replayed(i, cc))
		}
		if got := alertsOf(e, RuleForeignSpread); len(got) != 0 {
			t.Fatalf("alerts %+v for %d subjects split over two countries", got, n)
		}
	})
	t.Run("fail/bad_threshold", func(t *testing.T) {
		if _, err := New(Config{ForeignSpread: ForeignSpreadConfig{Threshold: MaxSpreadThreshold + 1}}, clock); !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("threshold above the bound: %v", err)
		}
	})
}

// countryRecorder is a recorder that can block countries.
type countryRecorder struct{ recorder }

func (r *countryRecorder) BlockCountry(_ context.Context, cc string, until time.Time, _ string) error {
	return r.add("block_country " + cc + " " + until.Format(time.RFC3339))
}

var _ CountryBlocker = (*countryRecorder)(nil)

// TestBlockCountry: a foreign_spread alert blocks its country for the
// policy's time; a country is never blocked on a log's claim, a token that
// did not pass, or when it is an allowed country, and the action is rate
// limited.
func TestBlockCountry(t *testing.T) {
	policy := func(c *Config) {
		c.Containment = map[string]ContainPolicy{RuleForeignSpread: {Action: ActionBlockCountry, For: 24 * time.Hour}}
	}
	t.Run("ok/spread_blocks_country", func(t *testing.T) {
		e := newEngine(t, policy)
		rec := &countryRecorder{}
		e.SetContainment(rec)
		for i := 0; i < DefaultSpreadThreshold; i++ {
			e.Process(replayed(i, "US"))
		}
		if got, want := calls(&rec.recorder), "block_country US 2025-06-25T03:00:00Z"; got != want {
			t.Fatalf("calls %q, want %q", got, want)
		}
		acts := e.Actions()
		if len(acts) != 1 || acts[0].Target != "US" || acts[0].Rule != RuleForeignSpread || acts[0].Error != "" || acts[0].Evidence["country"] != "US" {
			t.Fatalf("actions %+v", acts)
		}
	})
	t.Run("fail/no_country_blocker", func(t *testing.T) {
		e := newEngine(t, policy)
		e.SetContainment(&recorder{})
		for i := 0; i < DefaultSpreadThreshold; i++ {
			e.Process(replayed(i, "US"))
		}
		acts := e.Actions()
		if len(acts) != 1 || !strings.Contains(acts[0].Error, ErrCannotBlockCountry.Error()) {
			t.Fatalf("actions %+v, want the error %q", acts, ErrCannotBlockCountry)
		}
	})
	alert := func(mod func(m map[string]string)) *Alert {
		a := replayed(1, "US")
		m := eventAttrs(&a)
		if mod != nil {
			mod(m)
		}
		return &Alert{ID: "al-1", Rule: RuleForeignSpread, Entity: "country:" + m["country"], Raised: t0, Attrs: m}
	}
	home := newCountrySet([]string{"KR"}).has
	p := ContainPolicy{Action: ActionBlockCountry, For: time.Hour}
	for _, tc := range []struct {
		name string
		mod  func(m map[string]string)
		err  error
	}{
		{"ok/foreign", nil, nil},
		{"fail/home_country", func(m map[string]string) { m["country"] = "KR" }, ErrWeakEvidence},
		{"fail/reported", func(m map[string]string) { m["reported"] = "cloudfront" }, ErrWeakEvidence},
		{"fail/forged", func(m map[string]string) { m["reason"] = string(event.ReasonNotIssued) }, ErrWeakEvidence},
		{"fail/refused", func(m map[string]string) { m["reason"] = string(event.ReasonBlockedSource) }, ErrWeakEvidence},
		{"fail/no_token", func(m map[string]string) { delete(m, "jti") }, ErrWeakEvidence},
		{"fail/lowercase", func(m map[string]string) { m["country"] = "us" }, ErrNoTarget},
		{"fail/three_letters", func(m map[string]string) { m["country"] = "USA" }, ErrNoTarget},
		{"fail/no_country", func(m map[string]string) { delete(m, "country") }, ErrNoTarget},
	} {
		t.Run("plan/"+tc.name, func(t *testing.T) {
			r, err := plan(alert(tc.mod), p, ActionBlockCountry, home)
			if !errors.Is(err, tc.err) || (tc.err == nil && (r.Target != "US" || !r.Until.Equal(t0.Add(time.Hour)))) {
				t.Fatalf("plan: %+v, %v; want error %v", r, err, tc.err)
			}
		})
	}
	t.Run("ok/rate_limited", func(t *testing.T) {
		e := newEngine(t, func(c *Config) {
			policy(c)
			c.ContainmentLimits = map[Action]RateLimit{ActionBlockCountry: {Max: 2, Per: time.Hour}}
		})
		rec := &countryRecorder{}
		e.SetContainment(rec)
		for k, cc := range []string{"US", "SG", "JP"} {
			for i := 0; i < DefaultSpreadThreshold; i++ {
				e.Process(replayed(100*k+i, cc))
			}
		}
		if got := calls(&rec.recorder); strings.Count(got, "block_country") != 2 || strings.Contains(got, "JP") {
			t.Fatalf("calls %q, want US and SG only", got)
		}
		if len(alertsOf(e, RuleContainmentRateLimited)) != 1 {
			t.Fatalf("no %s alert", RuleContainmentRateLimited)
		}
	})
	t.Run("fail/policy_without_for", func(t *testing.T) {
		c := Config{Containment: map[string]ContainPolicy{RuleForeignSpread: {Action: ActionBlockCountry}}}
		if _, err := New(c, clock); !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("block_country without a duration: %v", err)
		}
	})
	t.Run("ok/queued_action", func(t *testing.T) {
		r, err := plan(alert(nil), p, ActionBlockCountry, home)
		if err != nil {
			t.Fatal(err)
		}
		r.Evidence = evidenceOf(alert(nil))
		body, _ := json.Marshal(r)
		if got, err := ParseQueuedAction(body); err != nil || got.Target != "US" {
			t.Fatalf("queued %s: %+v, %v", body, got, err)
		}
	})
}
