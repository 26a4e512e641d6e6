package sim

import (
	"context"
	"testing"
	"time"

	"github.com/custos-dev/custos/staff"
)

// runWorlds replays one tiny scenario through the baseline and the given
// custos worlds.
func runWorlds(t *testing.T, opts ...CustosOptions) (World, []World) {
	t.Helper()
	s := tinyScenario(t, nil)
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
		if w.FalseAlarmsPer10M > 0 {
			t.Logf("%s: %.1f false alarms per 10M normal requests", w.Name, w.FalseAlarmsPer10M)
		}
		if w.NormalRequests == 0 {
			t.Fatalf("%s saw no normal traffic", w.Name)
		}
	}
}
