package keys

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/store/storetest"
)

// newPGRig is newRig on a fresh PostgreSQL schema.
func newPGRig(t *testing.T, p Policy) *rig {
	t.Helper()
	db := storetest.Postgres(t)
	r := &rig{db: db, c: newFakeCustody(), j: &fakeJournal{}, clk: &clock{t: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}}
	var err error
	r.m, err = NewManager(context.Background(), db, r.c, "fake", p, r.clk.now, r.j)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The key manager's life cycle on PostgreSQL: rotate, revoke, change log,
// reload from the database.
func TestManagerPostgres(t *testing.T) {
	ctx := context.Background()
	r := newPGRig(t, Policy{Alg: ES256})
	k1, _ := r.signer(t)
	k2, err := r.m.Rotate(ctx, "alice", "drill")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.m.Revoke(ctx, k1.KID, "bob", "key file leaked"); err != nil {
		t.Fatal(err)
	}
	if kids := jwksKIDs(t, r.m); !slices.Equal(kids, []string{k2.KID}) {
		t.Fatalf("JWKS kids %v, want [%s]", kids, k2.KID)
	}
	var changes int
	if err := r.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM keys_changes`).Scan(&changes); err != nil {
		t.Fatal(err)
	}
	if changes != 4 { // k1 created, k2 created, k1 demoted, k1 revoked
		t.Fatalf("%d recorded changes, want 4", changes)
	}
	m2, err := NewManager(ctx, r.db, r.c, "fake", Policy{Alg: ES256}, r.clk.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := m2.Signer(ctx)
	if err != nil || got.KID != k2.KID {
		t.Fatalf("reloaded signer %s, %v; want %s", got.KID, err, k2.KID)
	}
	if k, ok := m2.Lookup(k1.KID); !ok || k.State != Revoked || k.RevokeReason != "key file leaked" || k.RevokedAt == nil {
		t.Fatalf("reloaded revoked key = %+v", k)
	}
}

// The PostgreSQL connection of a rotation is terminated in the middle of its
// transaction (after the key rows are written, before the change log is):
// the rotation fails with a clear error and nothing of it is written, in the
// database or in the manager.
func TestManagerPostgresConnectionLoss(t *testing.T) {
	ctx := context.Background()
	k := storetest.PostgresKillable(t)
	m, err := NewManager(ctx, k.DB, newFakeCustody(), "fake", Policy{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	k1, _, err := m.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	snapshot := func() string {
		var s string
		err := k.Admin.QueryRowContext(ctx, `SELECT
			(SELECT COALESCE(string_agg(kid || ':' || state, ',' ORDER BY kid), '') FROM keys_keys) || '|' ||
			(SELECT COUNT(*) FROM keys_changes)::text`).Scan(&s)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := snapshot()
	// The change-log insert is the last statement of the transaction.
	k.Slow(t, "keys_changes", "INSERT", 3)
	killed := k.TerminateSleeping(5 * time.Second)
	_, err = m.Rotate(ctx, "alice", "drill")
	if kerr := <-killed; kerr != nil {
		t.Fatal(kerr)
	}
	if err == nil || !strings.Contains(err.Error(), "failed to record key") {
		t.Fatalf("rotation across a lost connection: err %v, want a clear failure", err)
	}
	t.Logf("rotation failed as expected: %v", err)
	if after := snapshot(); after != before {
		t.Fatalf("half-written: rows before %q, after %q", before, after)
	}
	if kids := jwksKIDs(t, m); !slices.Equal(kids, []string{k1.KID}) {
		t.Fatalf("manager changed anyway: JWKS kids %v, want [%s]", kids, k1.KID)
	}
	if got, _, err := m.Signer(ctx); err != nil || got.KID != k1.KID {
		t.Fatalf("signer after failed rotation %s, %v; want %s", got.KID, err, k1.KID)
	}
	// The pool recovers without a restart.
	k.Unslow(t, "keys_changes", "INSERT")
	if _, err := m.Rotate(ctx, "alice", "drill"); err != nil {
		t.Fatalf("rotation after the connection came back: %v", err)
	}
}
