package detect

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/store/storetest"
)

// Alerts, incidents and containment actions persist on PostgreSQL: a repeat
// alert is an upsert, and migrating twice is a no-op.
func TestStorePostgres(t *testing.T) {
	db := storetest.Postgres(t)
	ctx := context.Background()
	e := newEngine(t, func(c *Config) {
		c.Containment = map[string]ContainPolicy{RuleNotIssued: {Action: ActionRevokeKey, DryRun: true}}
	})
	if err := e.SetStore(ctx, db); err != nil {
		t.Fatal(err)
	}
	e.Process(notIssued(0, "k1"))
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	e.Process(notIssued(1, "k1"))
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := StoredAlerts(ctx, db, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Count != 2 || got[0].Incident == "" {
		t.Fatalf("stored %+v", got)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM detect_actions WHERE dry_run = $1`, true).Scan(&n); err != nil || n != 1 {
		t.Fatalf("actions stored %d, %v", n, err)
	}
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM detect_incidents`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("incidents stored %d, %v", n, err)
	}
	if err := e.SetStore(ctx, db); err != nil {
		t.Fatal(err)
	}
}

// Two detector instances share the access stream, each taking the events of
// its partition, and one of them dies and is replaced by a fresh instance
// that gets the unacknowledged events again (a JetStream redelivery, here
// starting mid-window): every alert is in PostgreSQL once, under the id
// every instance gave it, and any engine reading the store (an authority)
// lists exactly those.
func TestStoreTwoDetectorsAndRedelivery(t *testing.T) {
	db := storetest.Postgres(t)
	ctx := context.Background()
	open := func() *Engine {
		e := newEngine(t, nil)
		if err := e.SetStore(ctx, db); err != nil {
			t.Fatal(err)
		}
		return e
	}
	// Forged tokens under five key ids from many sources; kids k0 and k1
	// are seen by both instances.
	var parts [2][]event.Access
	for i := range 60 {
		a := notIssued(i, fmt.Sprint("k", i%5))
		a.SrcIP = fmt.Sprintf("198.51.100.%d", i%7)
		p := (i % 7) % 2
		parts[p] = append(parts[p], a)
	}
	d1, d2 := open(), open()
	raisedBy := map[string]map[string]bool{} // entity -> ids
	for _, e := range []*Engine{d1, d2} {
		e.OnAlert(func(a Alert) {
			if raisedBy[a.Entity] == nil {
				raisedBy[a.Entity] = map[string]bool{}
			}
			raisedBy[a.Entity][a.ID] = true
		})
	}
	for i := range max(len(parts[0]), len(parts[1])) {
		for p, e := range []*Engine{d1, d2} {
			if i < len(parts[p]) {
				if err := e.ProcessDurable(ctx, parts[p][i]); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// d1 dies; its replacement is handed the last two thirds of its share
	// again, and d2's last events are redelivered to d2 itself.
	d1b := open()
	d1b.OnAlert(func(a Alert) { raisedBy[a.Entity][a.ID] = true })
	for _, ev := range parts[0][len(parts[0])/3:] {
		if err := d1b.ProcessDurable(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	for _, ev := range parts[1][len(parts[1])-3:] {
		if err := d2.ProcessDurable(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range []*Engine{d1, d2, d1b} {
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(raisedBy) != 5 {
		t.Fatalf("alerts raised for %d entities, want 5: %v", len(raisedBy), raisedBy)
	}
	for ent, ids := range raisedBy {
		if len(ids) != 1 {
			t.Errorf("%s raised under %d ids: %v", ent, len(ids), ids)
		}
	}
	var rows, distinct int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), COUNT(DISTINCT rule || entity) FROM detect_alerts`).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != 5 || distinct != 5 {
		t.Fatalf("%d alert rows for %d rule/entity pairs, want 5 of 5", rows, distinct)
	}
	// The counts stored are never below what one instance saw: a replayed
	// instance with less does not overwrite more.
	auth := open()
	as, err := auth.ListAlerts(ctx, AlertQuery{})
	if err != nil || len(as) != 5 {
		t.Fatalf("listed %d alerts, %v", len(as), err)
	}
	for _, a := range as {
		if !raisedBy[a.Entity][a.ID] {
			t.Errorf("listed %s for %s, raised as %v", a.ID, a.Entity, raisedBy[a.Entity])
		}
		if a.Entity == "kid:k0" && a.Count < int64(len(parts[0])/5) {
			t.Errorf("k0 stored with count %d", a.Count)
		}
		inc, alerts, ok, err := auth.FindIncident(ctx, a.Incident)
		if err != nil || !ok || !slices.ContainsFunc(alerts, func(x Alert) bool { return x.ID == a.ID }) || !slices.Contains(inc.Alerts, a.ID) {
			t.Errorf("incident %s of %s: %v %v %+v", a.Incident, a.ID, ok, err, inc)
		}
	}
}
