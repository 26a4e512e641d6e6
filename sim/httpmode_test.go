package sim

import (
	"context"
	"testing"
	"time"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/sim/scenario"
)

// The breach over real HTTP: authority, gateway, SCIM offboarding, detection
// and forensics, against a signature-only gateway on the same requests.
func TestHTTPReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("HTTP replay skipped in -short mode")
	}
	cfg := scenario.DefaultConfig()
	cfg.Scale = 0.00002
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h, err := StartHTTP(ctx, HTTPOptions{Scenario: cfg, Data: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	rep, err := h.Run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
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
	if cust.FirstAlert.IsZero() {
		t.Fatal("no alert on the forged requests")
	}
	if cust.TimeToScope == 0 {
		t.Fatalf("no scope: %v", cust.Notes)
	}
}
