package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/sim/scenario"
)

// alertBound is the goal: every variant alerts within 5 simulated minutes
// of its first request.
const alertBound = 5 * time.Minute

// containBound is the goal with containment on: at most 1,000 records exposed.
const containBound = 1000

func variantWorlds() []CustosOptions {
	return []CustosOptions{
		{Name: "custos"},
		{Name: "observe", KeyStolenAnyway: true, Observe: true, Contain: true},
	}
}

// TestVariantsAlertWithinFiveMinutes replays every variant, with its default
// parameters and with parameters the detectors were not tuned on, and
// asserts the first alert comes within five simulated minutes of the
// variant's first request in every custos world; where the tokens are
// forged, also the first alert by a rule blind to provenance (what observe
// mode or a log-ingesting gateway still sees); and that with containment on
// the variant is contained having exposed at most 1,000 records.
func TestVariantsAlertWithinFiveMinutes(t *testing.T) {
	cases := []struct {
		name      string
		edit      func(*scenario.Config)
		behaviour bool // a behaviour rule must alert too
	}{
		{"stolen-key", func(c *scenario.Config) { c.Attacker = scenario.StolenKey }, true},
		{"stolen-client-secret", func(c *scenario.Config) { c.Attacker = scenario.StolenClientSecret }, true},
		{"stolen-client-secret from home", func(c *scenario.Config) {
			c.Attacker, c.AttackDomestic, c.Seed = scenario.StolenClientSecret, true, 7
		}, true},
		{"stolen-client-secret slower", func(c *scenario.Config) {
			c.Attacker, c.AttackDomestic, c.AttackRate = scenario.StolenClientSecret, true, 2
		}, true},
		{"distributed", func(c *scenario.Config) { c.Attacker = scenario.Distributed }, true},
		{"distributed one member per source", func(c *scenario.Config) {
			c.Attacker, c.DistributedSources, c.MembersPerSource, c.Seed = scenario.Distributed, 20_000, 1, 3
		}, true},
		{"distributed slower", func(c *scenario.Config) {
			c.Attacker, c.AttackRate = scenario.Distributed, 2
		}, true},
		{"low-and-slow", func(c *scenario.Config) { c.Attacker = scenario.LowAndSlow }, true},
		{"low-and-slow two sources every 10 s", func(c *scenario.Config) {
			c.Attacker, c.SlowSources, c.SlowEvery, c.Seed = scenario.LowAndSlow, 2, 10*time.Second, 5
		}, true},
		{"replayed-tokens", func(c *scenario.Config) { c.Attacker = scenario.ReplayedTokens }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tinyScenario(t, tc.edit)
			first := s.Timeline().FirstForged
			if first.IsZero() {
				t.Fatal("the variant sent nothing")
			}
			base, ws := runWorldsWith(t, tc.edit, variantWorlds()...)
			if base.ForgedSent == 0 || base.ForgedSent != ws[0].ForgedSent {
				t.Fatalf("attack requests: baseline %d, custos %d", base.ForgedSent, ws[0].ForgedSent)
			}
			bound := alertBound
			for _, w := range ws {
				if w.FirstAlert.IsZero() || w.FirstAlert.Sub(first) > alertBound || w.FirstAlert.Before(first) {
					t.Errorf("%s: first alert %v (%s), first request %v: not within %v", w.Name, w.FirstAlert, w.FirstAlertRule, first, alertBound)
				}
				if tc.behaviour && (w.FirstBehaviour.IsZero() || w.FirstBehaviour.Sub(first) > bound) {
					t.Errorf("%s: first behaviour alert %v (%s), first request %v: not within %v", w.Name, w.FirstBehaviour, w.FirstBehaviourRule, first, bound)
				}
				var records int64
				for _, n := range w.Records {
					records += n
				}
				if w.Name == "observe" && (records > containBound || w.Containment.IsZero()) {
					t.Errorf("%s (containment on): %d records exposed, contained at %v: want at most %d, contained", w.Name, records, w.Containment, containBound)
				}
				t.Logf("%s: first alert +%v (%s), behaviour +%v (%s), served %d of %d, %d records exposed, false alarms %d in %d",
					w.Name, w.FirstAlert.Sub(first), w.FirstAlertRule, w.FirstBehaviour.Sub(first), w.FirstBehaviourRule,
					w.ForgedServed, w.ForgedSent, records, w.FalseAlarms, w.NormalRequests)
			}
		})
	}
}

// TestVariantRealTokensServed: tokens issued with the stolen client secret
// and replayed customer tokens pass every provenance check, so custos serves
// them unless containment blocks the source; forged tokens of the
// distributed and slow crawls are refused in enforce mode.
func TestVariantRealTokensServed(t *testing.T) {
	for _, v := range []scenario.Variant{scenario.StolenClientSecret, scenario.ReplayedTokens} {
		edit := func(c *scenario.Config) { c.Attacker = v }
		base, ws := runWorldsWith(t, edit, CustosOptions{Name: "custos"})
		if ws[0].ForgedServed != ws[0].ForgedSent || base.ForgedServed != base.ForgedSent {
			t.Errorf("%s: served %d of %d (baseline %d of %d), want all: real tokens pass provenance", v,
				ws[0].ForgedServed, ws[0].ForgedSent, base.ForgedServed, base.ForgedSent)
		}
		if !base.FirstAlert.IsZero() || !base.Containment.IsZero() {
			t.Errorf("%s: the baseline has the stolen-key attack's historical alert on another attacker", v)
		}
	}
	for _, v := range []scenario.Variant{scenario.Distributed, scenario.LowAndSlow} {
		edit := func(c *scenario.Config) { c.Attacker = v }
		_, ws := runWorldsWith(t, edit, CustosOptions{Name: "key copied", KeyStolenAnyway: true})
		if ws[0].ForgedServed != 0 || ws[0].ForgedSent == 0 {
			t.Errorf("%s: served %d of %d forged requests in enforce mode, want 0", v, ws[0].ForgedServed, ws[0].ForgedSent)
		}
	}
}

// TestVariantSources checks each variant's stream: its token kind, where it
// comes from, and its pacing.
func TestVariantSources(t *testing.T) {
	type seen struct {
		n, login       int
		nets, asns, ua map[string]bool
		countries      map[string]bool
		first, last    time.Time
		tokens         map[scenario.TokenKind]int
		seq            bool
		prev           uint64
	}
	collect := func(edit func(*scenario.Config)) seen {
		s := tinyScenario(t, edit)
		o := seen{nets: map[string]bool{}, asns: map[string]bool{}, ua: map[string]bool{}, countries: map[string]bool{}, tokens: map[scenario.TokenKind]int{}, seq: true}
		for r, ok := s.Next(); ok; r, ok = s.Next() {
			if !r.Kind.Attack() {
				continue
			}
			if o.n == 0 {
				o.first = r.Time
			}
			o.last = r.Time
			o.n++
			if r.Login {
				o.login++
			}
			a := r.SrcIP.As4()
			o.nets[string(a[:3])] = true
			o.asns[string(rune(r.ASN))] = true
			o.ua[r.UserAgent] = true
			o.countries[r.Country] = true
			o.tokens[r.Token]++
			if r.MemberID <= o.prev {
				o.seq = false
			}
			o.prev = r.MemberID
		}
		return o
	}
	d := collect(func(c *scenario.Config) { c.Attacker = scenario.Distributed })
	if len(d.countries) != 1 || !d.countries["KR"] || len(d.nets) < 2000 || len(d.asns) < 1000 || len(d.ua) < 8 || !d.seq || d.tokens[scenario.Forged] != d.n {
		t.Errorf("distributed: %d requests from %d /24s, %d ASNs, %d user agents, countries %v, sequential %v", d.n, len(d.nets), len(d.asns), len(d.ua), d.countries, d.seq)
	}
	l := collect(func(c *scenario.Config) {
		c.Attacker, c.SlowSources, c.SlowEvery = scenario.LowAndSlow, 3, 6*time.Second
	})
	if per := l.last.Sub(l.first) / time.Duration(l.n-1); len(l.nets) > 3 || per < 1900*time.Millisecond || per > 2100*time.Millisecond {
		t.Errorf("low-and-slow: %d sources, one request every %v overall, want 3 sources and 2 s", len(l.nets), per)
	}
	c := collect(func(c *scenario.Config) { c.Attacker = scenario.StolenClientSecret })
	if c.tokens[scenario.IssuedStolenSecret] != c.n || c.login != 0 || c.countries["KR"] || !c.seq {
		t.Errorf("stolen-client-secret: tokens %v of %d, %d logins, countries %v, sequential %v", c.tokens, c.n, c.login, c.countries, c.seq)
	}
	r := collect(func(c *scenario.Config) { c.Attacker = scenario.ReplayedTokens })
	if r.tokens[scenario.Replayed] != r.n || r.login != r.n || r.countries["KR"] || r.n != 5 {
		t.Errorf("replayed-tokens: tokens %v of %d, %d logins, countries %v", r.tokens, r.n, r.login, r.countries)
	}
}

// TestMatrixFalseAlarmsAsCount: below 10 M normal requests the matrix prints
// the false alarms as a count with the normal requests it rests on, in the
// table and in JSON (rate null); from 10 M on, a rate.
func TestMatrixFalseAlarmsAsCount(t *testing.T) {
	s := tinyScenario(t, func(c *scenario.Config) { c.Attacker = scenario.Distributed })
	base, ws := runWorldsWith(t, func(c *scenario.Config) { c.Attacker = scenario.Distributed }, CustosOptions{Name: "custos"})
	m := NewMatrix(NewReport(s, "events", append([]World{base}, ws...)...))
	var md bytes.Buffer
	if err := m.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	want := count(ws[0].FalseAlarms) + " in " + count(ws[0].NormalRequests) + " (too few for a rate)"
	if ws[0].NormalRequests == 0 || ws[0].NormalRequests >= MinNormalForRate || !strings.Contains(md.String(), want) || strings.Contains(md.String(), "per 10 M") {
		t.Errorf("matrix table lacks %q or prints a rate:\n%s", want, md.String())
	}
	var js bytes.Buffer
	if err := m.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Matrix []map[string]any `json:"matrix"`
	}
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Matrix) != 2 {
		t.Fatalf("matrix rows %d, want 2", len(got.Matrix))
	}
	for _, row := range got.Matrix {
		if row["attacker"] != "distributed" || row["false_alarms_per_10m"] != nil || row["normal_requests"] != float64(ws[0].NormalRequests) {
			t.Errorf("row %v: want attacker distributed, null rate, normal_requests %d", row, ws[0].NormalRequests)
		}
	}
	if c := FalseAlarmCell(3, 30_000_000); c != "1.00 per 10 M (over 30,000,000)" {
		t.Errorf("rate cell %q", c)
	}
	if c := FalseAlarmCell(3, MinNormalForRate-1); !strings.HasPrefix(c, "3 in 9,999,999") {
		t.Errorf("count cell %q", c)
	}
}

// TestMatrixGoals: the goals are judged over the custos worlds only (the
// baseline never alerts on the variants), each naming what misses it.
func TestMatrixGoals(t *testing.T) {
	start := time.Date(2025, 6, 24, 0, 0, 0, 0, time.UTC)
	rep := func(v scenario.Variant, ws ...World) Report {
		return Report{Attacker: v, Timeline: scenario.Timeline{FirstForged: start}, Worlds: ws}
	}
	ok := World{Name: "custos", FirstAlert: start.Add(time.Minute), NormalRequests: 60_000_000, FalseAlarms: 5}
	contained := World{Name: "observe", ContainmentOn: true, FirstAlert: start, Containment: start.Add(time.Second),
		Records: map[string]int64{"name": 600, "phone": 400}, NormalRequests: 60_000_000}
	goals := NewMatrix(rep(scenario.Distributed, World{Name: "baseline", NormalRequests: 60_000_000}, ok, contained)).Goals
	for _, g := range goals {
		if !g.Met {
			t.Errorf("goal %q not met (%s), want met", g.Goal, g.Detail)
		}
	}
	late, leaky, noisy := ok, contained, ok
	late.FirstAlert = start.Add(6 * time.Minute)
	leaky.Records = map[string]int64{"name": 1001}
	noisy.FalseAlarms = 7 // 1.17 in 10 M
	small := ok
	small.NormalRequests = 49_999_999
	for i, c := range []struct {
		ws   []World
		goal int
		says string
	}{{[]World{late, contained}, 0, "low-and-slow"}, {[]World{ok, leaky}, 1, "low-and-slow"},
		{[]World{noisy, contained}, 2, "low-and-slow"}, {[]World{small, contained}, 2, "not measured"}} {
		g := NewMatrix(rep(scenario.LowAndSlow, c.ws...)).Goals[c.goal]
		if g.Met || !strings.Contains(g.Detail, c.says) {
			t.Errorf("case %d: goal %q met %v (%s), want not met saying %q", i, g.Goal, g.Met, g.Detail, c.says)
		}
	}
}

// TestReplayedTokensContainedByCountry: real customers' tokens replayed from
// abroad over the crawler's hundreds of foreign networks, one request each.
// Per-network blocks never catch up (foreign_spread off: not contained); with
// foreign_spread → block_country the attack is contained, having exposed at
// most 1,000 records, and the countries it came from are blocked.
func TestReplayedTokensContainedByCountry(t *testing.T) {
	edit := func(c *scenario.Config) {
		c.Attacker, c.ReplayedTokens = scenario.ReplayedTokens, 20_000_000 // 2,000 tokens at the tiny scale
	}
	noSpread := detect.DefaultConfig()
	noSpread.ForeignSpread.Disabled = true
	s := tinyScenario(t, edit)
	var cs []*Custos
	obs := []Observer{}
	for _, o := range []CustosOptions{
		{Name: "observe", KeyStolenAnyway: true, Observe: true, Contain: true},
		{Name: "observe without foreign_spread", KeyStolenAnyway: true, Observe: true, Contain: true, Detect: &noSpread},
	} {
		c, err := NewCustos(s, o)
		if err != nil {
			t.Fatal(err)
		}
		cs, obs = append(cs, c), append(obs, c)
	}
	if err := Run(context.Background(), s, nil, obs...); err != nil {
		t.Fatal(err)
	}
	var ws []World
	for _, c := range cs {
		w, err := c.World(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	records := func(w World) (n int64) {
		for _, r := range w.Records {
			n += r
		}
		return n
	}
	w, without := ws[0], ws[1]
	t.Logf("with foreign_spread: served %d of %d, %d records, contained %v; without: served %d, %d records, contained %v",
		w.ForgedServed, w.ForgedSent, records(w), w.Containment, without.ForgedServed, records(without), without.Containment)
	if w.ForgedSent < 2000 {
		t.Fatalf("%d replayed requests sent, want 2,000", w.ForgedSent)
	}
	if w.Containment.IsZero() || records(w) > containBound {
		t.Errorf("with foreign_spread: %d records exposed, contained at %v: want at most %d, contained", records(w), w.Containment, containBound)
	}
	if len(cs[0].countries) == 0 || cs[0].countries["KR"] != (time.Time{}) {
		t.Errorf("countries blocked: %v", cs[0].countries)
	}
	if !without.Containment.IsZero() || without.ForgedServed <= w.ForgedServed {
		t.Errorf("without foreign_spread: served %d, contained at %v; the per-network blocks were expected not to catch up", without.ForgedServed, without.Containment)
	}
}

// A key dead before the attack began contains it from its first request:
// the matrix never shows a negative containment time.
func TestMatrixContainmentNeverNegative(t *testing.T) {
	start := time.Date(2025, 6, 24, 0, 0, 0, 0, time.UTC)
	rep := Report{Attacker: scenario.StolenKey, Timeline: scenario.Timeline{FirstForged: start},
		Worlds: []World{{Name: "custos", Containment: start.Add(-100 * 24 * time.Hour)}}}
	row := NewMatrix(rep).Rows[0]
	if row.ContainmentSecs == nil || *row.ContainmentSecs != 0 {
		t.Fatalf("containment %v, want 0", row.ContainmentSecs)
	}
}
