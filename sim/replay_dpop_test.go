package sim

import (
	"testing"

	"github.com/custos-dev/custos/sim/scenario"
)

// Customers' real tokens, copied and replayed from abroad: with DPoP-bound
// tokens none is served; without, each is served until detection sees the
// foreign origin (and, with containment, blocks the network). The tokens of
// an attacker holding the client secret are bound to his own key: DPoP
// does not stop them, detection still must.
func TestReplayedTokensWithDPoP(t *testing.T) {
	replayed := func(c *scenario.Config) { c.Attacker = scenario.ReplayedTokens }
	_, ws := runWorldsWith(t, replayed,
		CustosOptions{Name: "custos"},
		CustosOptions{Name: "custos + containment", Contain: true},
		CustosOptions{Name: "custos + DPoP", DPoP: true})
	plain, contained, bound := ws[0], ws[1], ws[2]
	if bound.ForgedSent == 0 || bound.ForgedServed != 0 || bound.SubjectsExposed != 0 {
		t.Fatalf("DPoP world: %d of %d replayed tokens served, %d subjects exposed", bound.ForgedServed, bound.ForgedSent, bound.SubjectsExposed)
	}
	if plain.ForgedServed == 0 {
		t.Fatal("without DPoP no replayed token was served: the replay proves nothing")
	}
	if plain.FirstAlert.IsZero() {
		t.Fatal("without DPoP nothing alerted on tokens replayed from abroad")
	}
	if contained.ForgedServed >= plain.ForgedServed || contained.Containment.IsZero() {
		t.Fatalf("containment served %d (uncontained %d), contained at %v", contained.ForgedServed, plain.ForgedServed, contained.Containment)
	}
	t.Logf("without DPoP: %d of %d served, first alert %s (%s); with containment %d served; with DPoP 0",
		plain.ForgedServed, plain.ForgedSent, plain.AlertDelay, plain.FirstAlertRule, contained.ForgedServed)

	secret := func(c *scenario.Config) { c.Attacker = scenario.StolenClientSecret }
	_, ws = runWorldsWith(t, secret, CustosOptions{Name: "custos + DPoP", DPoP: true})
	if ws[0].ForgedServed == 0 {
		t.Fatal("DPoP stopped the attacker's own tokens: the world models binding wrong")
	}
}
