package console_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/custos-dev/custos/console"
	"github.com/custos-dev/custos/store"
	"github.com/custos-dev/custos/store/storetest"
)

// sharedSessions checks two session tables on one store, as two replicas
// have them: a session made at one is found, kept alive and ended at the
// other; idle and absolute expiry hold; the cookie value is not stored.
func sharedSessions(t *testing.T, db *store.DB) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a, err := console.NewStoreSessions(ctx, db, clock)
	if err != nil {
		t.Fatal(err)
	}
	b, err := console.NewStoreSessions(ctx, db, clock)
	if err != nil {
		t.Fatal(err)
	}
	id, sess, err := a.Create("staff-1", "cr_1")
	if err != nil {
		t.Fatal(err)
	}
	got, ok := b.Lookup(id)
	if !ok || got.StaffID != "staff-1" || got.AdminID != "cr_1" || got.CSRF != sess.CSRF {
		t.Fatalf("session at the other replica: %+v %v", got, ok)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM console_sessions WHERE id_hash=$1`, id).Scan(&n); err != nil || n != 0 {
		t.Fatalf("cookie value stored in clear: %d %v", n, err)
	}
	for _, bad := range []string{"", id + "x", id[:len(id)-1]} {
		if _, ok := b.Lookup(bad); ok {
			t.Fatalf("lookup of %q passed", bad)
		}
	}
	// Used at b every 20 minutes, it outlives the 30-minute idle limit...
	for i := 0; i < 3; i++ {
		now = now.Add(20 * time.Minute)
		if _, ok := b.Lookup(id); !ok {
			t.Fatalf("active session expired after %d uses", i)
		}
	}
	// ...and then idles out at a.
	now = now.Add(console.SessionIdle + time.Second)
	if _, ok := a.Lookup(id); ok {
		t.Fatal("idle session still live")
	}
	// Ended at one, gone at the other; EndFor ends every session of a person.
	id2, _, _ := a.Create("staff-2", "cr_2")
	id3, _, _ := a.Create("staff-2", "cr_2")
	b.End(id2)
	if _, ok := a.Lookup(id2); ok {
		t.Fatal("session ended at b still live at a")
	}
	if n := b.EndFor("staff-2"); n != 1 {
		t.Fatalf("EndFor ended %d, want 1", n)
	}
	if _, ok := a.Lookup(id3); ok {
		t.Fatal("session survived EndFor")
	}
	// The absolute limit holds even for a session in constant use.
	id4, _, _ := a.Create("staff-3", "cr_3")
	for elapsed := time.Duration(0); elapsed < console.SessionMax; elapsed += 20 * time.Minute {
		now = now.Add(20 * time.Minute)
		b.Lookup(id4)
	}
	now = now.Add(time.Minute)
	if _, ok := a.Lookup(id4); ok {
		t.Fatal("session outlived SessionMax")
	}
}

func TestStoreSessionsSQLite(t *testing.T) {
	db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sharedSessions(t, db)
}

func TestStoreSessionsPostgres(t *testing.T) {
	sharedSessions(t, storetest.Postgres(t))
}
