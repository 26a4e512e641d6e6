package sim

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/sim/scenario"
	"github.com/custos-dev/custos/staff"
)

// runWorlds replays one tiny scenario through the baseline and the given
// custos worlds.
func runWorlds(t *testing.T, opts ...CustosOptions) (World, []World) {
	t.Helper()
	return runWorldsWith(t, nil, opts...)
}

func runWorldsWith(t *testing.T, edit func(*scenario.Config), opts ...CustosOptions) (World, []World) {
	t.Helper()
	s := tinyScenario(t, edit)
	base := NewBaseline(s)
	obs := []Observer{base}
	var cs []*Custos
	for _, o := range opts {
		c, err := NewCustos(s, o)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
		obs = append(obs, c)
	}
	if err := Run(context.Background(), s, nil, obs...); err != nil {
		t.Fatal(err)
	}
	var out []World
	for _, c := range cs {
		w, err := c.World(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, w)
	}
	return base.World(), out
}

func TestCustosWorlds(t *testing.T) {
	s := tinyScenario(t, nil)
	tl := s.Timeline()
	base, ws := runWorlds(t,
		CustosOptions{Name: "custos"},
		CustosOptions{Name: "key stolen anyway", KeyStolenAnyway: true},
		CustosOptions{Name: "observe", KeyStolenAnyway: true, Observe: true, Contain: true},
		CustosOptions{Name: "no lifecycle", NoLifecycle: true},
	)
	def, stolen, observe, nolife := ws[0], ws[1], ws[2], ws[3]
	if base.ForgedServed == 0 || base.SubjectsExposed == 0 {
		t.Fatalf("baseline served nothing: %+v", base)
	}

	// custos: the key dies at its custodian's departure (within the sweep
	// interval), months before the first forged request.
	if want := tl.CustodianLeaves.Add(staff.DefaultSweepInterval); !def.KeyDied.Equal(want) {
		t.Fatalf("custos key died %s, want %s", def.KeyDied, want)
	}
	if def.ForgedServed != 0 || def.SubjectsExposed != 0 {
		t.Fatalf("custos served %d forged requests", def.ForgedServed)
	}
	// With the key stolen anyway, provenance refuses from the first request.
	if stolen.ForgedServed != 0 || stolen.SubjectsExposed != 0 {
		t.Fatalf("key stolen anyway: served %d", stolen.ForgedServed)
	}
	if stolen.FirstAlert.IsZero() || stolen.AlertDelay > time.Minute {
		t.Fatalf("key stolen anyway: first alert %s after the first forged request", stolen.AlertDelay)
	}
	// Observe mode with containment: the first forged request is seen and
	// alerted on at once; containment revokes the key, so exposure is bounded
	// by the requests served before the first alert (one, here).
	if observe.FirstAlert.IsZero() || observe.AlertDelay > time.Minute {
		t.Fatalf("observe: first alert delay %s", observe.AlertDelay)
	}
	if observe.Containment.IsZero() || observe.Containment.Sub(tl.FirstForged) > time.Minute {
		t.Fatalf("observe: contained at %s", observe.Containment)
	}
	if observe.ForgedServed > 1 || observe.ForgedServed >= base.ForgedServed {
		t.Fatalf("observe: served %d forged requests, bound is 1", observe.ForgedServed)
	}
	// Without the lifecycle link the schedule still kills the key within a
	// day of the departure.
	if nolife.KeyDied.Sub(tl.CustodianLeaves) > 25*time.Hour || nolife.ForgedServed != 0 {
		t.Fatalf("no lifecycle: key died %s, served %d", nolife.KeyDied, nolife.ForgedServed)
	}
	for _, w := range ws {
		if w.FalseAlarms > 0 {
			t.Logf("%s: %d false alarms in %d normal requests", w.Name, w.FalseAlarms, w.NormalRequests)
		}
		if w.NormalRequests == 0 {
			t.Fatalf("%s saw no normal traffic", w.Name)
		}
	}
}

// TestRunEventsMatchesObserve checks that the events-mode pipeline (one
// shared stream, batches, concurrent stages, two store writers) decides and
// counts every request exactly as feeding the worlds one request at a time
// does, and that the store it writes scopes to the same refusals.
func TestRunEventsMatchesObserve(t *testing.T) {
	// Eleven days around the start of the crawl: every kind of request, and
	// few enough hour partitions for the store to be scoped quickly.
	short := func(c *scenario.Config) {
		c.TestsStart = time.Date(2025, 6, 20, 0, 0, 0, 0, scenario.KST)
		c.CrawlStart = time.Date(2025, 6, 24, 0, 0, 0, 0, scenario.KST)
		c.CrawlEnd = time.Date(2025, 6, 30, 0, 0, 0, 0, scenario.KST)
		c.NormalStart, c.NormalEnd = c.TestsStart, time.Date(2025, 7, 1, 0, 0, 0, 0, scenario.KST)
	}
	cfg := scenario.DefaultConfig()
	cfg.Scale = 0.0001
	short(&cfg)
	var last, calls uint64
	rep, err := RunEvents(context.Background(), EventsOptions{Scenario: cfg, Worlds: DefaultWorlds(), ScopeDir: t.TempDir()},
		func(done, _ uint64) { last = done; calls++ })
	if err != nil {
		t.Fatal(err)
	}
	base, ws := runWorldsWith(t, short, DefaultWorlds()...)
	want := append([]World{base}, ws...)
	if len(rep.Worlds) != len(want) {
		t.Fatalf("%d worlds, want %d", len(rep.Worlds), len(want))
	}
	if rep.Worlds[0].ForgedServed == 0 || rep.Worlds[2].FirstAlert.IsZero() || rep.Worlds[3].ForgedServed == 0 {
		t.Fatalf("replay too short to compare: %+v", rep.Worlds)
	}
	if calls == 0 || last != rep.Requests {
		t.Fatalf("progress called %d times, last at %d of %d requests", calls, last, rep.Requests)
	}
	for i, got := range rep.Worlds {
		w := want[i]
		if got.Name != w.Name || !got.KeyDied.Equal(w.KeyDied) || !got.FirstAlert.Equal(w.FirstAlert) || got.AlertDelay != w.AlertDelay ||
			!got.Containment.Equal(w.Containment) || got.ForgedSent != w.ForgedSent || got.ForgedServed != w.ForgedServed ||
			got.SubjectsExposed != w.SubjectsExposed || got.MembersExposed != w.MembersExposed || got.NonMembersExposed != w.NonMembersExposed ||
			got.FalseAlarms != w.FalseAlarms || got.NormalRequests != w.NormalRequests {
			t.Errorf("world %d:\n got  %+v\n want %+v", i, got, w)
		}
		for _, c := range Classes {
			if got.Records[c] != w.Records[c] {
				t.Errorf("%s: %s records %d, want %d", got.Name, c, got.Records[c], w.Records[c])
			}
		}
		if i == 0 {
			continue
		}
		if got.TimeToScope <= 0 {
			t.Errorf("%s: no time to scope", got.Name)
		}
		refused := fmt.Sprintf(", %d refused attempts", got.ForgedSent-got.ForgedServed)
		if !slices.ContainsFunc(got.Notes, func(n string) bool { return strings.HasSuffix(n, refused) }) {
			t.Errorf("%s: scope does not count %d refused attempts: %q", got.Name, got.ForgedSent-got.ForgedServed, got.Notes)
		}
	}
}

// A route-volume alert raised in an hour with forged requests on its route
// is the attack's even when its only sample is an ordinary request; the same
// alert in an hour without them is a false alarm.
func TestRouteVolumeAlertAttribution(t *testing.T) {
	s := tinyScenario(t, nil)
	c, err := NewCustos(s, CustosOptions{Name: "custos"})
	if err != nil {
		t.Fatal(err)
	}
	const route = "/api/members/{member}/addresses"
	crawl := time.Date(2025, 6, 24, 10, 20, 0, 0, time.UTC)
	forged := event.Access{Route: route, Time: crawl}
	forged.Token.KID = stolenKID
	c.mark(1, true, &forged)
	ordinary := []string{"r2"} // request 2 was not marked as forged
	c.onAlert(detect.Alert{Rule: detect.RuleRouteVolume, Entity: "route:" + route, Raised: crawl.Add(30 * time.Minute), Samples: ordinary})
	if c.falseAlarms != 0 {
		t.Fatal("a route-volume alert in an hour of the crawl counted as a false alarm")
	}
	c.onAlert(detect.Alert{Rule: detect.RuleRouteVolume, Entity: "route:" + route, Raised: crawl.Add(3 * time.Hour), Samples: ordinary})
	c.onAlert(detect.Alert{Rule: detect.RuleRouteVolume, Entity: "route:/api/members/{member}/orders", Raised: crawl, Samples: ordinary})
	c.onAlert(detect.Alert{Rule: detect.RuleEnumeration, Entity: "ip:10.0.0.1", Raised: crawl, Samples: ordinary})
	if c.falseAlarms != 3 {
		t.Fatalf("false alarms %d, want 3 (other hour, other route, other rule with ordinary samples)", c.falseAlarms)
	}
}
