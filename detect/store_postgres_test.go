package detect

import (
	"context"
	"testing"

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
